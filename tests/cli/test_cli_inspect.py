"""``lrpaudit inspect``: the IR table and fidelity line, and exit 2 with one clear line for every bad model file."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from lrpaudit.errors import FidelityError
from lrpaudit.fidelity import check_fidelity
from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.passes.cleanup import clone
from tests.helpers.cli import run_cli
from tests.helpers.onnx_builders import make_model, save
from tests.helpers.reference_models import build, example_input, export_onnx

node = helper.make_node


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return export_onnx(build("resnet_like"), example_input("resnet_like"), folder / "resnet.onnx", False, 17)


def invoke(*args: str):
    return run_cli("inspect", *args)


def assert_clean_failure(result, *needles: str) -> str:
    """Exit 2, no traceback, and one ``lrpaudit: error:`` line mentioning every needle."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("lrpaudit: error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_inspect_prints_ir_table_and_passed_fidelity(resnet_file):
    result = invoke(resnet_file, "--random", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"IR of {resnet_file} (opset 17)" in out
    for header in ("id", "op", "inputs", "outputs", "params", "origin"):
        assert header in out
    for op in ("conv", "relu", "maxpool", "add", "global_avgpool", "linear"):
        assert re.search(rf"\b{op}\b", out)
    assert "[3, 3, 16, 16]" in out  # --random 3: the table shows the batch actually used
    fidelity = next(line for line in out.splitlines() if line.startswith("fidelity vs onnxruntime"))
    assert fidelity.endswith("PASSED")
    compared = int(re.search(r"(\d+) tensors compared", fidelity).group(1))
    assert compared > 10  # every intermediate tensor, not only the output
    assert "forward fidelity ok" in out


def test_inspect_final_only_compares_only_the_output(resnet_file):
    result = invoke(resnet_file, "--final-only")
    assert result.exit_code == 0, result.output
    assert "1 tensors compared: PASSED" in result.output


@pytest.mark.parametrize(
    "op_type,build_node,inits",
    [
        ("Max", lambda: node("Max", ["r", "x"], ["y"], name="pick"), {}),
        ("NonZero", lambda: node("NonZero", ["r"], ["y"], name="pick"), {}),
        ("Abs", lambda: node("Abs", ["r"], ["y"], name="pick"), {}),
        ("Cos", lambda: node("Cos", ["r"], ["y"], name="pick"), {}),
    ],
)
@pytest.mark.parametrize("opset", [13, 17])
def test_unknown_op_names_op_node_opset_and_file(tmp_path, op_type, build_node, inits, opset):
    nodes = [node("Relu", ["x"], ["r"]), build_node()]
    types = {"y": onnx.TensorProto.INT64} if op_type == "NonZero" else None
    model = make_model(nodes, {"x": (1, 3)}, ["y"], opset, inits, output_types=types)
    path = save(model, tmp_path)
    line = assert_clean_failure(invoke(path), op_type, "'pick'", f"opset {opset}", str(path))
    assert "unsupported op" in line


def test_unnamed_unknown_node_is_named_by_its_output(tmp_path):
    model = make_model(
        [node("Relu", ["x"], ["r"]), node("Cos", ["r"], ["cos_out"])], {"x": (1, 3)}, ["cos_out"], 13
    )
    assert_clean_failure(invoke(save(model, tmp_path)), "'cos_out'", "Cos", "opset 13")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    assert_clean_failure(invoke(path), str(path), "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert_clean_failure(invoke(path), str(path), "empty")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.02])
def test_truncated_file(tmp_path, resnet_file, fraction):
    data = resnet_file.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_clean_failure(invoke(path), str(path))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    assert_clean_failure(invoke(path), str(path))


def test_text_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)
    assert_clean_failure(invoke(path), str(path))


def test_missing_external_data_file_is_named(tmp_path):
    path = export_onnx(
        build("mlp_bn"), example_input("mlp_bn"), tmp_path / "ext.onnx", True, 20, external_data=True
    )
    data = tmp_path / "ext.onnx.data"
    assert data.is_file()
    assert invoke(path).exit_code == 0  # complete: loads
    os.remove(data)
    assert_clean_failure(invoke(path), str(path), "ext.onnx.data", "missing")


def test_fidelity_failure_names_the_first_diverging_node(resnet_file):
    """A wrong weight in the IR (a stand-in for a frontend bug) is caught at the node that carries it."""
    model = load_onnx(resnet_file)
    x = example_input("resnet_like", 2, seed=3).numpy()
    graph = model.graph({"x": x.shape})
    assert check_fidelity(model, graph, {"x": x}, intermediates=True).passed
    broken = clone(graph)
    convs = [n for n in broken.nodes if n.op == "conv"]
    target = convs[3]
    weight = target.params["weight"].clone()
    weight[0, 0, 1, 1] += 0.05 * weight.abs().max()
    target.params["weight"] = weight
    with pytest.raises(FidelityError) as info:
        check_fidelity(model, broken, {"x": x}, intermediates=True)
    message = str(info.value)
    assert f"node {target.id!r}" in message and str(resnet_file) in message
    result = check_fidelity(model, broken, {"x": x}, intermediates=True, raise_on_failure=False)
    assert not result.passed and result.first_diverging == target.id
    # every node before the broken one still agrees with onnxruntime
    order = [n.id for n in broken.nodes]
    for diff in result.tensors:
        if diff.node in order and order.index(diff.node) < order.index(target.id):
            assert diff.rel_diff <= 1e-4
    # without intermediates the failure is seen at the output
    final = check_fidelity(model, broken, {"x": x}, intermediates=False, raise_on_failure=False)
    assert not final.passed and final.first_diverging == broken.nodes[-1].id
    # the cached graph of the model was not touched by the edit
    assert torch.equal(
        graph.node(target.id).params["weight"], model.graph({"x": x.shape}).node(target.id).params["weight"]
    )
    assert check_fidelity(model, graph, {"x": x}, intermediates=True).passed


def test_old_style_file_with_initializers_as_inputs(tmp_path):
    inits = {"W": np.ones((4, 3), np.float32), "b": np.zeros(4, np.float32)}
    nodes = [node("Gemm", ["x", "W", "b"], ["h"], transB=1), node("Relu", ["h"], ["y"])]
    path = save(
        make_model(nodes, {"x": (1, 3)}, ["y"], 9, inits, inits_as_inputs=True, ir_version=3), tmp_path
    )
    result = invoke(path)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "[1, 3]" in result.output
