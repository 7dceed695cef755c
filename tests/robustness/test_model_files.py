"""Broken model files: ONNX protobufs, TorchScript archives and pickles, each refused with one line (exit 2).

Every kind of damage a model file can carry is tried: truncated and random bytes, dangling names and cycles,
unknown or unsupported ops, opsets and IR versions nothing knows, initializers whose data does not fit, external
data that is short, missing or escapes the model's folder, shapes too large to allocate; TorchScript archives with
missing entries, ``torch.save`` pickles, planted pickles. A pickle is never unpickled.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lrpaudit.errors import InputError
from lrpaudit.frontends import load_model
from lrpaudit.inputs.limits import check_batch_memory
from lrpaudit.inputs.shapes import MAX_SAMPLE_ELEMENTS
from tests.helpers.onnx_builders import make_model
from tests.helpers.robustness import (
    assert_one_line_error,
    check,
    copy,
    externalize,
    invoke,
    mlp,
    model_file,
    no_traceback,
    node,
    small_cnn,
)


def test_the_valid_files_audit(files):
    for model in (files.onnx, files.pt):
        result = check(model, "--inputs", files.inputs, "-q")
        no_traceback(result)
        assert result.exit_code in (0, 1), result.output


def _graph_edit(edit):
    def make(folder: Path) -> Path:
        model = copy(mlp())
        edit(model)
        return model_file(folder, model)

    return make


def _set_input(node_index: int, slot: int, name: str):
    def edit(model):
        model.graph.node[node_index].input[slot] = name

    return edit


def _no_outputs(model):
    del model.graph.output[:]


def _no_inputs(model):
    del model.graph.input[:]


def _op(name: str):
    def edit(model):
        model.graph.node[1].op_type = name

    return edit


def _opset(version: int):
    def edit(model):
        model.opset_import[0].version = version

    return edit


def _ir_version(model):
    model.ir_version = 99


def _int64_input(model):
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64


def _no_input_shape(model):
    model.graph.input[0].type.tensor_type.ClearField("shape")


def _short_external_data(folder: Path) -> Path:
    model, raw = externalize(mlp(), "w.data")
    (folder / "w.data").write_bytes(raw[:5])
    return model_file(folder, model)


def _bad_initializer(model):
    del model.graph.initializer[0].dims[:]  # rank 0 for 12 values: the checker lets it through


def _raw(data: bytes):
    def make(folder: Path) -> Path:
        path = folder / "model.onnx"
        path.write_bytes(data)
        return path

    return make


def _truncated(folder: Path) -> Path:
    data = mlp().SerializeToString()
    return _raw(data[: len(data) // 2])(folder)


def _external(location: str, with_data: bool):
    def make(folder: Path) -> Path:
        inner = folder / "model_dir"
        inner.mkdir()
        model, raw = externalize(mlp(), location)
        if with_data:
            (inner / location).resolve().write_bytes(raw)
        return model_file(inner, model)

    return make


def _huge(folder: Path) -> Path:
    model = make_model([node("Relu", ["x"], ["y"], name="relu")], {"x": [1, 3, 100000, 100000]}, ["y"], 17)
    return model_file(folder, model)


def _cnn_opset_6(folder: Path) -> Path:
    model = small_cnn()
    model.opset_import[0].version = 6  # valid for onnx; onnxruntime has no BatchNormalization-6 kernel
    return model_file(folder, model)


def _cnn_edit(edit):
    def make(folder: Path) -> Path:
        model = small_cnn()
        edit(model)
        return model_file(folder, model)

    return make


def _conv_bias_is_the_weight(model):
    model.graph.node[0].input[2] = "cw"


def _negative_variance(model):
    var = next(t for t in model.graph.initializer if t.name == "var")
    var.CopyFrom(onnx.numpy_helper.from_array(-np.ones(2, np.float32), "var"))


def _scalar_input(folder: Path) -> Path:
    return model_file(folder, make_model([node("Relu", ["x"], ["y"], name="relu")], {"x": []}, ["y"], 17))


MODEL_CASES = {
    "missing": (lambda folder: folder / "absent.onnx", ["absent.onnx", "no such file"]),
    "empty": (_raw(b""), ["empty file"]),
    "truncated": (_truncated, ["not a readable ONNX model"]),
    "random bytes": (_raw(np.random.default_rng(0).bytes(512)), ["not a readable ONNX model"]),
    "a folder": (lambda folder: folder, ["is a folder"]),
    "dangling name": (_graph_edit(_set_input(1, 0, "nowhere")), ["'relu' (Relu)", "'nowhere'", "dangling"]),
    "cycle": (_graph_edit(_set_input(0, 0, "r")), ["cycle", "'fc1' (Gemm)"]),
    "no outputs": (_graph_edit(_no_outputs), ["declares no outputs"]),
    "no inputs": (_graph_edit(_no_inputs), ["declares no inputs"]),
    "unknown op": (_graph_edit(_op("FooBar")), ["node 'relu' (FooBar)", "unknown op 'FooBar'", "opset 17"]),
    "unsupported op": (_graph_edit(_op("Neg")), ["'relu'", "Neg", "opset 17", "unsupported op"]),
    "opset too new": (_graph_edit(_opset(999)), ["opset 999", "newer than the installed onnx"]),
    "opset onnxruntime lacks": (_cnn_opset_6, ["onnxruntime cannot load", "BatchNormalization(6)"]),
    "initializer dims vs data": (_graph_edit(_bad_initializer), ["initializer 'W1'", "cannot be read"]),
    "conv bias of the wrong shape": (
        _cnn_edit(_conv_bias_is_the_weight),
        ["'conv' (Conv, opset 17)", "bias has shape [2, 1, 3, 3]; expected [2]"],
    ),
    "negative BatchNorm variance": (_cnn_edit(_negative_variance), ["'bn'", "negative or NaN variance"]),
    "ir_version too new": (_graph_edit(_ir_version), ["invalid ONNX model", "ir_version 99"]),
    "integer graph input": (
        _graph_edit(_int64_input),
        ["'fc1'", "integer input 'x' as numbers", "token ids"],
    ),
    "input without a shape": (_graph_edit(_no_input_shape), ["invalid ONNX model", "'shape'"]),
    "external data too short": (_short_external_data, ["cannot read external data", "'W1'"]),
    "missing external data": (_external("w.data", False), ["external data file 'w.data' is missing"]),
    "external data escapes": (_external("../x.data", True), ["'../x.data'", "escapes the model's folder"]),
    "external data absolute": (_external("/etc/hostname", False), ["'/etc/hostname'", "escapes"]),
    "huge declared shape": (_huge, ["[1, 3, 100000, 100000]", "30,000,000,000 elements", "2**28"]),
    "scalar input": (_scalar_input, ["'x'", "scalar (rank 0)"]),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_onnx_file_exits_2_with_one_line(tmp_path, case):
    make, needles = MODEL_CASES[case]
    path = make(tmp_path)
    line = assert_one_line_error(check(path, "--random", "2"), *needles)
    assert str(path) in line


def test_external_data_symlink_out_of_the_folder_is_refused(tmp_path):
    inner = tmp_path / "model_dir"
    inner.mkdir()
    model, raw = externalize(mlp(), "w.data")
    (tmp_path / "outside.data").write_bytes(raw)
    (inner / "w.data").symlink_to(tmp_path / "outside.data")
    path = model_file(inner, model)
    assert_one_line_error(check(path, "--random", "2"), str(path), "'w.data'", "escapes")


def test_external_data_inside_the_folder_loads(tmp_path):
    model, raw = externalize(mlp(), "weights/w.data")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.data").write_bytes(raw)
    result = check(model_file(tmp_path, model), "--random", "2", "-q")
    assert result.exit_code in (0, 1), result.output


def test_huge_shape_is_refused_before_allocating(tmp_path, monkeypatch):
    """No array of the huge shape is ever requested: the limit is checked on shapes only."""
    path = _huge(tmp_path)
    asked = []
    real = np.random.default_rng

    class Spy:
        def __init__(self, seed=None):
            self.rng = real(seed)

        def standard_normal(self, size=None, *args, **kwargs):
            asked.append(size)
            return self.rng.standard_normal(size, *args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", Spy)
    for command in (("check", path, "--random", "1"), ("inspect", path)):
        assert_one_line_error(invoke(*command), "elements per sample")
    assert asked == []


def test_huge_input_shape_flag_is_refused(files):
    for model in (files.onnx, files.pt):
        assert_one_line_error(
            check(model, "--random", "1", "--input-shape", "1,100000000000"), "elements per sample"
        )
    assert MAX_SAMPLE_ELEMENTS == 2**28


def test_an_input_batch_beyond_the_available_memory_is_refused(files, monkeypatch):
    monkeypatch.setattr("lrpaudit.inputs.limits.available_memory", lambda: 10_000)
    line = assert_one_line_error(check(files.onnx, "--random", "1000", "--batch-size", "1000"), "--random")
    assert "one batch of 1000 inputs needs" in line and "lower --batch-size" in line
    monkeypatch.setattr("lrpaudit.inputs.limits.available_memory", lambda: 100)
    assert_one_line_error(
        check(files.onnx, "--inputs", files.inputs), str(files.inputs), "one batch of 5 inputs"
    )


def test_batch_memory_beyond_what_is_available_is_refused(files):
    graph = load_model(files.onnx).graph({"x": (4, 3)})
    check_batch_memory(graph, 8, "m.onnx", available=10**9)  # fits
    with pytest.raises(InputError, match=r"m.onnx: one batch needs about .* GiB .* lower --batch-size"):
        check_batch_memory(graph, 8, "m.onnx", available=100)


# ---------------------------------------------------------------- TorchScript and pickles


def _zip_edit(source: Path, target: Path, drop) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            if not drop(item.filename):
                dst.writestr(item, src.read(item.filename))
    return target


TORCHSCRIPT_CASES = {
    "missing constants.pkl": (lambda n: n.endswith("/constants.pkl"), "missing", "constants.pkl"),
    "missing code file": (lambda n: "/code/" in n and n.endswith(".py"), "torch.jit.load failed", ""),
    "missing tensor data": (lambda n: "/data/" in n, "torch.jit.load failed", "data/0"),
}


@pytest.mark.parametrize("case", list(TORCHSCRIPT_CASES))
def test_torchscript_archive_with_a_missing_entry(files, tmp_path, case):
    drop, *needles = TORCHSCRIPT_CASES[case]
    path = _zip_edit(files.pt, tmp_path / "broken.pt", drop)
    assert_one_line_error(check(path, "--random", "2"), str(path), *[n for n in needles if n])


def test_truncated_torchscript_archive(files, tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes(files.pt.read_bytes()[:400])
    assert_one_line_error(check(path, "--random", "2"), str(path), "not a TorchScript archive")


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_torch_save_of_a_state_dict_is_refused(files, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save(files.net.state_dict(), path)
    assert_one_line_error(
        check(path, "--random", "2"), str(path), "torch.save archive", "never loads pickles"
    )


class Planted:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    marker: str = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.pkl", "model.onnx", "model"])
def test_a_plain_pickle_is_never_unpickled(tmp_path, name):
    marker = tmp_path / "UNPICKLED"
    Planted.marker = str(marker)
    path = tmp_path / name
    path.write_bytes(pickle.dumps(Planted(), protocol=4))
    for command in ("check", "inspect"):
        args = (command, path, "--random", "1") if command == "check" else (command, path)
        line = assert_one_line_error(invoke(*args), str(path))
        assert "pickle" in line
    assert not marker.exists()


def test_a_planted_pickle_inside_a_torchscript_archive_is_not_run(files, tmp_path):
    """torch.jit.load resolves only TorchScript types: a data.pkl that calls open() fails to load, inertly."""
    marker = tmp_path / "UNPICKLED"
    Planted.marker = str(marker)
    path = tmp_path / "planted.pt"
    with zipfile.ZipFile(files.pt) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(Planted(), protocol=2)
            dst.writestr(item, data)
    assert_one_line_error(check(path, "--random", "1"), str(path), "torch.jit.load failed")
    assert not marker.exists()


def test_a_pickled_npy_is_never_unpickled(files, tmp_path):
    marker = tmp_path / "UNPICKLED"
    Planted.marker = str(marker)
    path = tmp_path / "inputs.npy"
    path.write_bytes(pickle.dumps(Planted(), protocol=4))
    assert_one_line_error(check(files.onnx, "--inputs", path), str(path), "pickled", "never unpickles")
    assert not marker.exists()
