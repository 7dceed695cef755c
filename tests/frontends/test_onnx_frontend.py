"""The ONNX frontend on torch exports: every reference model x both exporters x several opsets.

Three oracles:
* onnxruntime (graph optimizations off) on the exported file, float32: max |IR - ORT| <= 1e-5 of max |ORT|,
  for the final output and, through ``check_fidelity(intermediates=True)``, for every intermediate tensor;
* the torch model itself in float64: the float64 IR forward matches ``model.double()`` to <= 1e-12 of the output
  scale. This needs exports whose BatchNorm was not folded by the exporter in float32, so it uses
  ``fold=False`` exports (dynamo ``optimize=False``; legacy ``do_constant_folding=False`` with
  ``training=PRESERVE``, which also skips the legacy eval-mode Conv+BN peephole). Both keep
  ``BatchNormalization`` nodes, which the test asserts, and lrpaudit folds them exactly in float64;
* structure: every BatchNorm of these models follows a conv/linear, so the canonical IR has no ``affine`` node and
  exactly one linear-type node per Conv/Linear module.

The graphs are specialized per input shape, so each check runs at batch 2 (the export example) and batch 3.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lrpaudit.fidelity import check_fidelity
from lrpaudit.forward import run_forward
from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.ir import LINEAR_TYPE
from tests.helpers.numeric import rel_diff
from tests.helpers.reference_models import MODELS, build, example_input

EXPORTS = [("legacy", 9), ("legacy", 11), ("legacy", 17), ("dynamo", 18), ("dynamo", 20)]
UNFOLDED_EXPORTS = [("legacy", 17), ("dynamo", 20)]
BATCHES = (2, 3)
RTOL_F32 = 1e-5
RTOL_F64 = 1e-12


@pytest.fixture(scope="session")
def exported(reference_export):
    """``exported(name, exporter, opset, fold)`` -> path of the export, made once per session (conftest)."""
    return reference_export


def onnxruntime_output(path, x: np.ndarray) -> np.ndarray:
    """The model's output from a plain onnxruntime session with graph optimizations disabled."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def count_linear_modules(model: nn.Module) -> int:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    return sum(isinstance(m, kinds) for m in model.modules())


def assert_batchnorm_folded(graph, name: str, onnx_ops: list[str]) -> None:
    """No BatchNorm survives as ``affine``; one linear-type IR node per Conv/Linear module; origin records BN."""
    torch_model = build(name)
    ops = [node.op for node in graph.nodes]
    assert "affine" not in ops
    assert sum(op in LINEAR_TYPE for op in ops) == count_linear_modules(torch_model)
    folded = [node for node in graph.nodes if "BatchNormalization" in node.origin.get("ops", [])]
    assert len(folded) == onnx_ops.count("BatchNormalization")


@pytest.mark.parametrize("exporter,opset", EXPORTS, ids=[f"{e}{o}" for e, o in EXPORTS])
@pytest.mark.parametrize("name", list(MODELS))
def test_matches_onnxruntime_float32(exported, name, exporter, opset):
    path = exported(name, exporter, opset)
    model = load_onnx(path)
    assert model.opset == opset
    for batch in BATCHES:
        x = example_input(name, batch, seed=batch).numpy()
        graph = model.graph({"x": x.shape})
        ours = run_forward(graph, {"x": torch.from_numpy(x)}, torch.float32)[graph.outputs[0]]
        assert rel_diff(ours, onnxruntime_output(path, x)) <= RTOL_F32
        result = check_fidelity(model, graph, {"x": x}, "float32", rtol=RTOL_F32, intermediates=True)
        assert result.passed and result.first_diverging is None
        assert result.max_rel_diff <= RTOL_F32
        # intermediates were really compared: at least every IR node that kept an ONNX tensor name
        assert len(result.tensors) >= max(2, len(graph.nodes) // 2)
    assert_batchnorm_folded(graph, name, [n.op_type for n in model.proto.graph.node])


@pytest.mark.parametrize("exporter,opset", UNFOLDED_EXPORTS, ids=[f"{e}{o}" for e, o in UNFOLDED_EXPORTS])
@pytest.mark.parametrize("name", list(MODELS))
def test_float64_matches_torch(exported, name, exporter, opset):
    path = exported(name, exporter, opset, fold=False)
    onnx_ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in build(name).modules())
    assert onnx_ops.count("BatchNormalization") == n_bn, "the unfolded export must keep its BatchNorm nodes"
    torch_model = build(name).double()
    model = load_onnx(path)
    for batch in BATCHES:
        x = example_input(name, batch, seed=10 + batch, dtype=torch.float64)
        graph = model.graph({"x": tuple(x.shape)})
        ours = run_forward(graph, {"x": x}, torch.float64)[graph.outputs[0]]
        with torch.no_grad():
            ref = torch_model(x)
        assert rel_diff(ours, ref) <= RTOL_F64
        # the exporter's float32 rounding is all that separates the float32 forward from onnxruntime
        ours32 = run_forward(graph, {"x": x.float()}, torch.float32)[graph.outputs[0]]
        assert rel_diff(ours32, onnxruntime_output(path, x.float().numpy())) <= RTOL_F32
    assert_batchnorm_folded(graph, name, onnx_ops)


def test_graph_is_cached_per_input_shape(exported):
    model = load_onnx(exported("resnet_like", "legacy", 17))
    g2 = model.graph({"x": (2, 3, 16, 16)})
    assert model.graph({"x": (2, 3, 16, 16)}) is g2
    g1 = model.graph({"x": (1, 3, 16, 16)})
    assert g1 is not g2
    assert g1.shapes[g1.outputs[0]] == (1, 10)
    assert g2.shapes[g2.outputs[0]] == (2, 10)
    x = example_input("resnet_like", 1).numpy()
    ours = run_forward(g1, {"x": torch.from_numpy(x)}, torch.float32)[g1.outputs[0]]
    assert rel_diff(ours, onnxruntime_output(model.path, x)) <= RTOL_F32


def test_legacy_export_keeps_linear_batchnorm_and_ir_folds_it(exported):
    """The legacy exporter folds Conv+BN but leaves BN after Gemm; the IR folds it (origin Gemm+BN)."""
    path = exported("mlp_bn", "legacy", 17)
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("BatchNormalization") == 2
    graph = load_onnx(path).graph({"x": (2, 20)})
    assert [node.op for node in graph.nodes] == ["linear", "relu", "linear", "relu", "linear"]
    assert graph.nodes[0].origin["ops"] == ["Gemm", "BatchNormalization"]
