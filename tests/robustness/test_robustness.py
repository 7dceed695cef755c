"""Bad input, faults and limits: never a traceback, never a silent pass, nothing half-written (DESIGN 8-10).

Every input the tool takes is tried broken: model files (ONNX and TorchScript), input arrays, configs, numbers that
go non-finite inside the propagation, empty audits, report paths, interruptions. Each refusal is exit 2 with one
``lrpaudit: error:`` line naming the file, node or key; NaN/Inf inside the model is a ``non_finite`` failure (exit
1) in valid JSON; a failed or interrupted run leaves no report behind.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tracemalloc
import types
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from lrpaudit import api
from lrpaudit.errors import InputError
from lrpaudit.frontends import load_model
from lrpaudit.inputs import file_batches
from lrpaudit.inputs.limits import check_batch_memory
from lrpaudit.inputs.shapes import MAX_SAMPLE_ELEMENTS
from lrpaudit.reports.schema_check import validate_report
from lrpaudit.rules import Rule
from tests.helpers.onnx_builders import make_model
from tests.helpers.robustness import (
    assert_one_line_error,
    check,
    copy,
    externalize,
    invoke,
    mlp,
    no_traceback,
    node,
    small_cnn,
    weights,
    write,
)


def strict_json(text: str) -> dict:
    """Parse JSON refusing NaN/Infinity tokens (JSON has none), then validate against the shipped schema."""

    def refuse(token):
        raise AssertionError(f"bare {token} in the JSON report")

    report = json.loads(text, parse_constant=refuse)
    validate_report(report)
    return report


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> types.SimpleNamespace:
    """A valid MLP (dynamic batch), inputs for it, and a traced TorchScript twin."""
    folder = tmp_path_factory.mktemp("robust")
    ns = types.SimpleNamespace(folder=folder)
    ns.onnx = write(mlp(), folder / "mlp.onnx")
    ns.inputs = folder / "x.npy"
    np.save(ns.inputs, np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    ns.pt = folder / "mlp.pt"
    with torch.no_grad():
        torch.jit.trace(net, torch.randn(1, 3)).save(str(ns.pt))
    ns.net = net
    return ns


def model_file(folder: Path, model: onnx.ModelProto, name: str = "model.onnx") -> Path:
    return write(model, folder / name)


# ================================================================ model files


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


# ================================================================ inputs


def _npy(folder: Path, array, name: str = "in.npy") -> Path:
    path = folder / name
    np.save(path, array, allow_pickle=True)
    return path


INPUT_CASES = {
    "wrong rank": (np.zeros((2, 3, 4), np.float32), ["expects shape [?, 3]", "got [2, 3, 4]"]),
    "wrong size": (np.zeros((2, 5), np.float32), ["expects size 3 on axis 1", "[2, 5]"]),
    "a scalar": (np.float32(1.0), ["expects shape [?, 3]", "got []"]),
    "strings": (np.array([["a", "b", "c"]]), ["dtype <U1", "floating-point"]),
    "complex": (np.ones((2, 3), np.complex64), ["dtype complex64"]),
    "bool": (np.ones((2, 3), bool), ["dtype bool"]),
    "object array": (np.array([[1, 2, 3]], dtype=object), ["pickled Python objects", "never unpickles"]),
    "NaN": (np.array([[1, 2, 3], [1, np.nan, 3]], np.float32), ["NaN or Inf", "(sample 1)"]),
    "Inf": (np.array([[np.inf, 2, 3]], np.float32), ["NaN or Inf", "(sample 0)"]),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_bad_input_array_exits_2(files, tmp_path, case):
    array, needles = INPUT_CASES[case]
    path = _npy(tmp_path, array)
    assert_one_line_error(
        check(files.onnx, "--inputs", path), str(path), "'x'" if case != "object array" else "", *needles
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64])
def test_numeric_dtypes_are_converted_deliberately(files, tmp_path, dtype):
    """float64 stays float64, other floats and integers become float32 as they are (no scaling)."""
    data = np.array([[1, 2, 3], [0, 5, 7]]).astype(dtype)
    path = _npy(tmp_path, data)
    batch = next(file_batches(path, {"x": [None, 3]}, 8))
    assert batch.arrays["x"].dtype == (np.float64 if dtype == np.float64 else np.float32)
    np.testing.assert_array_equal(batch.arrays["x"], data.astype(np.float64))
    result = check(files.onnx, "--inputs", path, "-q")
    assert result.exit_code in (0, 1), result.output


def test_one_sample_without_batch_axis_is_accepted(files, tmp_path):
    result = check(files.onnx, "--inputs", _npy(tmp_path, np.ones(3, np.float32)), "-q")
    assert result.exit_code in (0, 1), result.output
    assert "1 samples" in result.stderr or "1/1 samples" in result.stderr


def test_input_files_and_folders(files, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(check(files.onnx, "--inputs", empty), str(empty), "no .npy or .npz files")
    absent = tmp_path / "absent.npy"
    assert_one_line_error(check(files.onnx, "--inputs", absent), str(absent), "no such file")
    text = tmp_path / "notes.npy"
    text.write_text("hello")
    assert_one_line_error(check(files.onnx, "--inputs", text), str(text), "not a .npy or .npz file")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY\x07\x07garbage")
    assert_one_line_error(check(files.onnx, "--inputs", garbage), str(garbage), "not a readable .npy/.npz")


def test_npz_inputs(tmp_path):
    model = make_model(
        [node("Add", ["a", "b"], ["y"], name="add")], {"a": [None, 3], "b": [None, 3]}, ["y"], 17
    )
    path = model_file(tmp_path, model)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, a=np.ones((2, 3), np.float32), c=np.ones((2, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", wrong), str(wrong), "missing arrays for graph inputs ['b']")
    counts = tmp_path / "counts.npz"
    np.savez(counts, a=np.ones((2, 3), np.float32), b=np.ones((3, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", counts), "different sample counts [2, 3]")
    objects = tmp_path / "objects.npz"
    np.savez(objects, a=np.array([[1, 2, 3]], dtype=object), b=np.ones((1, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", objects), str(objects), "'a'", "pickled")
    one = _npy(tmp_path, np.ones((2, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", one), "inputs ['a', 'b']", "give a .npz")


def test_input_shape_flag_errors(files):
    assert_one_line_error(
        check(files.onnx, "--random", "2", "--input-shape", "foo=1,3"), "--input-shape names ['foo']", "['x']"
    )
    assert_one_line_error(
        check(files.onnx, "--random", "2", "--input-shape", "1,3,4,5"), "does not fit input 'x'"
    )
    for bad in ("1,-3", "1,0", "a,b"):
        result = check(files.onnx, "--random", "2", "--input-shape", bad)
        no_traceback(result)
        assert result.exit_code == 2 and "--input-shape" in result.output


def test_zero_samples_is_an_empty_audit(files, tmp_path):
    path = _npy(tmp_path, np.zeros((0, 3), np.float32))
    assert_one_line_error(
        check(files.onnx, "--inputs", path), str(files.onnx), "checked nothing", str(path), "--allow-empty"
    )
    report = tmp_path / "empty.json"
    result = check(files.onnx, "--inputs", path, "--allow-empty", "--json-report", report, "-q")
    assert result.exit_code == 0, result.output
    data = strict_json(report.read_text())
    assert data["summary"]["samples"] == 0 and data["runs"][0]["notes"] == [
        "the audit checked nothing: no samples"
    ]


def test_graph_without_layers_is_an_empty_audit(tmp_path):
    path = model_file(
        tmp_path, make_model([node("Identity", ["x"], ["y"], name="id")], {"x": [None, 3]}, ["y"], 17)
    )
    assert_one_line_error(check(path, "--random", "2"), str(path), "no layers", "--allow-empty")
    result = check(path, "--random", "2", "--allow-empty", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "the graph has no layers" in strict_json(result.stdout)["runs"][0]["notes"][0]


def test_file_batches_are_lazy(tmp_path):
    """A folder streams file by file, and a .npy batch by batch: a broken second file is only reached later."""
    np.save(tmp_path / "a.npy", np.ones((5, 3), np.float32))
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY garbage")
    batches = file_batches(tmp_path, {"x": [None, 3]}, 2)
    assert isinstance(batches, types.GeneratorType)
    sizes = [next(batches).size for _ in range(3)]
    assert sizes == [2, 2, 1]
    with pytest.raises(InputError, match="b.npy"):
        next(batches)


def test_file_batches_memory_holds_one_batch(tmp_path):
    """2000 samples x 2000 features (16 MB) read in batches of 50: peak allocation is about one batch."""
    path = tmp_path / "many.npy"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2000, 2000))
    data[:] = 1.0
    data.flush()
    del data
    tracemalloc.start()
    try:
        seen = sum(batch.size for batch in file_batches(path, {"x": [None, 2000]}, 50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_batch = 50 * 2000 * 4
    assert seen == 2000
    assert peak < 4 * one_batch, f"peak {peak / 2**20:.1f} MiB for batches of {one_batch / 2**20:.1f} MiB"


def test_more_samples_than_one_batch_stream_through_the_audit(files, tmp_path):
    path = _npy(tmp_path, np.random.default_rng(2).standard_normal((2000, 3)).astype(np.float32))
    seen = []
    result = api.audit(
        files.onnx, Rule("epsilon"), path, batch_size=50, on_batch=lambda done, size: seen.append(size)
    )
    assert len(result.samples) == 2000 and seen == [50] * 40
    assert [s.index for s in result.samples] == list(range(2000))


# ================================================================ numerics


def _mlp_with(**changes) -> onnx.ModelProto:
    params = weights()
    for key, (index, value) in changes.items():
        params[key] = params[key].copy()
        params[key][index] = value
    return mlp(params)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_fail_as_non_finite_in_valid_json(files, tmp_path, value):
    """onnxruntime computes the same NaN/Inf: the forward is faithful, the propagation reports non_finite."""
    path = model_file(tmp_path, _mlp_with(W2=((0, 0), value)))
    report = tmp_path / "audit.json"
    result = check(path, "--inputs", files.inputs, "--json-report", report, "--junit-xml", tmp_path / "a.xml")
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert "NON_FINITE" in result.stdout and "NaN/Inf at fc2" in result.stdout
    ET.parse(tmp_path / "a.xml")  # well-formed JUnit with the non-finite figures
    data = strict_json(report.read_text())
    row = next(r for r in data["runs"][0]["layers"] if r["id"] == "fc2")
    assert row["verdict"] == "non_finite" and row["non_finite"] is True and row["rel_error"] is None
    assert data["summary"]["worst"]["verdict"] == "non_finite"


def test_fidelity_compares_non_finite_entries_by_position():
    """NaN/Inf in the same places as the runtime is faithful (finite entries compared as usual); a NaN where the
    runtime has a number, or an Inf of the other sign, is a divergence."""
    from lrpaudit.fidelity import compare

    same = compare(
        "y", "fc2", torch.tensor([[np.nan, np.inf, 1.0]]), np.array([[np.nan, np.inf, 1.0 + 1e-9]])
    )
    assert same.rel_diff < 1e-8
    for ref in ([[0.5, np.inf, 1.0]], [[np.nan, -np.inf, 1.0]]):
        diff = compare("y", "fc2", torch.tensor([[np.nan, np.inf, 1.0]]), np.array(ref))
        assert math.isinf(diff.rel_diff)


def test_zero_rule_with_a_zero_denominator_fails_as_degenerate(tmp_path):
    """LRP-0 on a unit with z = 0 that receives relevance (init: one): reported, never divided by zero."""
    w = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    model = make_model(
        [node("Gemm", ["x", "W"], ["y"], transB=1, name="fc")], {"x": [None, 3]}, ["y"], 17, {"W": w}
    )
    path = model_file(tmp_path, model)
    inputs = _npy(tmp_path, np.array([[1.0, 1.0, 0.0]], np.float32))  # y[0] = 0 exactly
    config = tmp_path / "zero.yaml"
    config.write_text("version: 1\ninit: one\ntarget: 0\nrules:\n  - match: {op: linear}\n    rule: zero\n")
    report = tmp_path / "audit.json"
    result = check(path, "--inputs", inputs, "-c", config, "--json-report", report)
    no_traceback(result)
    assert result.exit_code == 1, result.output
    row = strict_json(report.read_text())["runs"][0]["layers"][0]
    assert row["verdict"] == "fail" and row["largest_category"] == "degenerate"
    assert row["degenerate"] == pytest.approx(1.0) and row["rel_error"] == pytest.approx(1.0)
    assert "degenerate units" in row["hint"]


def test_a_target_with_zero_output_is_flagged_not_divided_by(files, tmp_path):
    """x = 0 gives logits exactly 0 (no biases): that sample has nothing to explain; the others still count."""
    params = weights()
    params["b1"] = np.zeros(4, np.float32)
    path = model_file(tmp_path, mlp(params))
    inputs = _npy(tmp_path, np.concatenate([np.zeros((1, 3)), np.ones((2, 3))]).astype(np.float32))
    result = check(path, "--inputs", inputs, "--format", "json", "--allow-empty")
    no_traceback(result)
    assert result.exit_code in (0, 1), result.output
    run = strict_json(result.stdout)["runs"][0]
    flags = [s["nothing_to_explain"] for s in run["samples"]]
    assert flags == [True, False, False]
    empty = run["samples"][0]
    assert empty["output_scale"] == 0 and empty["rel_error"] == 0.0 and empty["non_finite"] is False
    assert any(
        "1 of 3 samples have nothing to explain" in note and "samples 0" in note for note in run["notes"]
    )
    assert f"lrpaudit: warning: {path}: 1 of 3 samples have nothing to explain" in result.stderr
    table = check(path, "--inputs", inputs)
    assert "note: 1 of 3 samples have nothing to explain" in table.stdout.replace("\n", " ")
    quiet = check(path, "--inputs", inputs, "-q")
    assert "1 of 3 samples have nothing to explain" in quiet.stderr


def test_all_targets_with_zero_output_is_an_empty_audit(tmp_path):
    params = weights()
    params["W2"] = np.zeros((2, 4), np.float32)
    path = model_file(tmp_path, mlp(params))
    inputs = _npy(tmp_path, np.ones((3, 3), np.float32))
    report = tmp_path / "r.json"
    line = assert_one_line_error(check(path, "--inputs", inputs, "--json-report", report), str(path))
    assert "exactly 0 for all 3 samples" in line and "init: one" in line and "--allow-empty" in line
    assert not report.exists()
    assert check(path, "--inputs", inputs, "--allow-empty", "-q").exit_code == 0


@pytest.mark.parametrize(
    "target,needle",
    [("7", "target 7 is out of range for an output with 2 entries"), ("-1", "target -1 is out of range")],
)
def test_target_out_of_range(files, target, needle):
    assert_one_line_error(check(files.onnx, "--random", "2", "--target", target), str(files.onnx), needle)


# ================================================================ configs


def _config(folder: Path, text: str) -> Path:
    path = folder / "lrp.yaml"
    path.write_text(text)
    return path


def test_a_rule_that_matches_no_node_warns_and_runs(files, tmp_path):
    config = _config(
        tmp_path, "version: 1\nextends: epsilon\nrules:\n  - match: {name: 'nothing*'}\n    rule: zero\n"
    )
    result = check(files.onnx, "--random", "2", "-c", config, "-q")
    no_traceback(result)
    assert result.exit_code in (0, 1)
    assert "lrpaudit: warning:" in result.stderr and "matches no node" in result.stderr
    assert f"{config}:4" in result.stderr


def test_a_linear_node_without_a_rule_lists_the_node_ids(files, tmp_path):
    config = _config(tmp_path, "version: 1\nrules:\n  - match: {name: fc1}\n    rule: zero\n")
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", config), str(config), "'fc2' (linear)")


@pytest.mark.parametrize(
    "body,key",
    [
        ("tolerance:\n  layer_rtol: 0\n", "tolerance.layer_rtol: must be > 0"),
        ("tolerance:\n  end_to_end_rtol: -1.0e-3\n", "tolerance.end_to_end_rtol: must be > 0"),
        (
            "tolerance:\n  overrides:\n    - match: {name: fc1}\n      layer_rtol: 0\n",
            "overrides[0].layer_rtol",
        ),
    ],
)
def test_tolerance_must_be_positive(files, tmp_path, body, key):
    config = _config(tmp_path, "version: 1\nextends: epsilon\n" + body)
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", config), str(config), key)


def test_config_edge_cases(files, tmp_path):
    deep = _config(tmp_path, "version: 1\nrules: " + "[" * 2000 + "]" * 2000 + "\n")
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", deep), "nested too deeply")
    huge_target = _config(tmp_path, "version: 1\nextends: epsilon\ntarget: 99999999999999999999999\n")
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", huge_target), "out of range")
    not_yaml = tmp_path / "passwd"
    not_yaml.write_text("root:x:0:0:root:/root:/bin/bash " * 40)
    wrapper = _config(tmp_path, f"version: 1\nextends: {not_yaml}\n")
    line = assert_one_line_error(check(files.onnx, "--random", "2", "-c", wrapper), str(not_yaml))
    assert len(line) < 300  # a long foreign file is quoted briefly
    zbox = _config(
        tmp_path,
        "version: 1\nrules:\n  - match: {op: linear}\n    rule: zbox\n    low: [1, 2]\n    high: [3, 4]\n",
    )
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", zbox), "node 'fc", "zbox bounds")
    python_tag = _config(
        tmp_path, f"version: 1\nrules: !!python/object/apply:os.system ['touch {tmp_path}/X']\n"
    )
    assert_one_line_error(check(files.onnx, "--random", "2", "-c", python_tag), str(python_tag))
    assert not (tmp_path / "X").exists()


# ================================================================ reports: atomic, nothing half-written

REPORTS = ("audit.json", "audit.xml", "audit.md", "maps.npz")


def _report_args(folder: Path) -> list:
    json_path, xml, md, npz = (folder / name for name in REPORTS)
    return ["--json-report", json_path, "--junit-xml", xml, "--markdown", md, "--save-relevance", npz]


def test_a_bad_file_after_good_ones_leaves_no_report(files, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "a.npy", np.ones((6, 3), np.float32))
    np.save(inputs / "b.npy", np.ones((2, 4), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    result = check(files.onnx, "--inputs", inputs, "--batch-size", "2", *_report_args(out))
    assert_one_line_error(result, str(inputs / "b.npy"), "expects size 3 on axis 1")
    assert list(out.iterdir()) == []


def test_an_unwritable_report_fails_before_the_audit(files, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(api, "propagate", lambda *a, **k: ran.append(1))
    args = _report_args(tmp_path)
    args[1] = tmp_path / "missing" / "audit.json"
    result = check(files.onnx, "--random", "2", *args)
    assert_one_line_error(result, "cannot write", "missing")
    assert ran == [] and list(tmp_path.iterdir()) == []
    result = check(files.onnx, "--random", "2", "--save-relevance", tmp_path)
    assert_one_line_error(result, "cannot write", "it is a folder")


def test_ctrl_c_exits_130_without_traceback_or_reports(files, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "propagate", interrupt)
    result = check(files.onnx, "--inputs", files.inputs, *_report_args(tmp_path))
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and result.stderr.strip() == "lrpaudit: interrupted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["json", "npz"])
def test_ctrl_c_during_a_report_write_leaves_nothing_half_written(files, tmp_path, monkeypatch, which):
    """Interrupted inside the writer: the temp file is removed and an existing report stays as it was."""
    target = tmp_path / ("audit.json" if which == "json" else "maps.npz")
    target.write_text("previous")
    if which == "json":
        import lrpaudit.reports._io as common

        def interrupted_replace(src, dst):
            raise KeyboardInterrupt

        monkeypatch.setattr(common.os, "replace", interrupted_replace)
        args = ["--json-report", target]
    else:
        real_savez = np.savez

        def interrupted_savez(out, **arrays):
            real_savez(out, **{k: v for k, v in list(arrays.items())[:1]})
            raise KeyboardInterrupt

        monkeypatch.setattr("lrpaudit.reports.emit.np.savez", interrupted_savez)
        args = ["--save-relevance", target]
    result = check(files.onnx, "--inputs", files.inputs, "-q", *args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_an_internal_error_exits_3_with_a_private_traceback_file(files, tmp_path, monkeypatch):
    monkeypatch.setattr("lrpaudit.cli._common.tempfile.gettempdir", lambda: str(tmp_path))
    planted = tmp_path / "victim.txt"
    planted.write_text("keep me")
    os.symlink(planted, tmp_path / "lrpaudit-traceback.txt")  # a planted link in a shared /tmp

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(api, "propagate", boom)
    result = check(files.onnx, "--random", "2")
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RuntimeError: simulated bug (traceback in" in lines[0]
    assert planted.read_text() == "keep me"
    log = Path(lines[0].split("traceback in ", 1)[1].split(";", 1)[0])
    assert log.parent == tmp_path and "simulated bug" in log.read_text()


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 8 TB"),
        torch.OutOfMemoryError("CUDA out of memory"),
    ],
)
def test_out_of_memory_is_a_limit_not_a_bug(files, monkeypatch, error):
    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(api, "propagate", exhausted)
    assert_one_line_error(check(files.onnx, "--random", "2"), "out of memory", "--batch-size")


def test_bad_device_is_a_usage_error(files):
    result = check(files.onnx, "--random", "2", "--device", "tpu")
    no_traceback(result)
    assert result.exit_code == 2
    with pytest.raises(InputError, match="not a device"):
        api.audit(files.onnx, Rule("epsilon"), random=1, device="tpu")


def test_api_arrays_are_checked_like_files(files):
    good = np.random.default_rng(3).standard_normal((4, 3))
    result = api.audit(files.onnx, Rule("epsilon"), good, batch_size=3)
    assert [s.source for s in result.samples] == ["array#0", "array#1", "array#2", "array#3"]
    bad = good.copy()
    bad[2, 1] = np.nan
    cases = [
        (bad, r"array: input 'x' contains NaN or Inf values \(sample 2\)"),
        (np.ones((2, 5)), r"array: input 'x' expects size 3 on axis 1"),
        (np.array([["a", "b", "c"]]), r"dtype <U1"),
        ({"y": good}, r"no array given for graph inputs \['x'\]"),
    ]
    for inputs, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            api.audit(files.onnx, Rule("epsilon"), inputs)


def test_a_name_with_a_newline_stays_on_one_line(tmp_path):
    model = copy(mlp())
    model.graph.node[1].op_type = "\nRelu"
    path = model_file(tmp_path, model)
    assert_one_line_error(check(path, "--random", "2"), "unknown op '\\nRelu'")
