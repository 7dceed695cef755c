"""IR params keep the file's precision where no pass changed them, and audits give the numbers they gave when every
param was a float64 master copy.

The expectation for "the same numbers" is the previous design itself, rebuilt here: the frontend's raw IR with
every floating param turned into an exact float64 copy (what the frontends used to make), run through the same
passes. Both graphs are audited in float32 and float64; every record and relevance map must agree bit for bit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

import lrpaudit
from lrpaudit.forward import cast_params
from lrpaudit.frontends import load_model
from lrpaudit.passes import canonicalize
from lrpaudit.propagate import propagate
from lrpaudit.rules import Rule
from tests.helpers.onnx_builders import make_model, rand, save
from tests.helpers.reference_models import export_onnx, randomize_batchnorm


class Mixed(nn.Module):
    """A convolution with its own bias (kept), one followed by BatchNorm (folded), linear layers (kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.fc1 = nn.Linear(5 * 6 * 6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.bn(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def mixed(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(Mixed(), 0).eval().to(dtype)


X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def files(export_cache):
    def onnx_of(dtype):
        return lambda path: export_onnx(mixed(dtype), X.to(dtype), path, dynamo=False, opset=17, fold=False)

    def traced(path):
        torch.jit.trace(mixed(), X).save(str(path))

    return {
        "onnx": export_cache("precision-mixed-nofold.onnx", onnx_of(torch.float32)),
        "onnx64": export_cache("precision-mixed64-nofold.onnx", onnx_of(torch.float64)),
        "torchscript": export_cache("precision-mixed.pt", traced),
    }


def weighted(graph):
    return [node for node in graph.nodes if node.op in ("conv", "linear")]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_float32_files_keep_float32_params_and_folded_ones_are_float64(files, fmt):
    graph = load_model(files[fmt]).graph({"x": tuple(X.shape)})
    convs = [n for n in weighted(graph) if n.op == "conv"]
    linears = [n for n in weighted(graph) if n.op == "linear"]
    assert len(convs) == 2 and len(linears) == 2
    plain, folded = convs
    assert "BatchNormalization" in folded.origin["ops"] or "aten::batch_norm" in folded.origin["ops"]
    # no pass changed conv1 and the linear layers: the file's float32
    for node in (plain, *linears):
        assert {k: t.dtype for k, t in node.params.items()} == {
            "weight": torch.float32,
            "bias": torch.float32,
        }
    # the folded BatchNorm was computed in float64 and stays so
    assert {k: t.dtype for k, t in folded.params.items()} == {"weight": torch.float64, "bias": torch.float64}
    # a float32 audit uses the kept params as they are (no copy); a float64 audit casts them
    cast32, cast64 = cast_params(graph, torch.float32), cast_params(graph, torch.float64)
    assert cast32[plain.id]["weight"].data_ptr() == plain.params["weight"].data_ptr()
    assert cast64[plain.id]["weight"].dtype == torch.float64
    assert cast32[folded.id]["weight"].dtype == torch.float32


def test_a_float64_file_keeps_float64_params(files):
    graph = load_model(files["onnx64"]).graph({"x": tuple(X.shape)})
    assert {t.dtype for n in weighted(graph) for t in n.params.values()} == {torch.float64}


@pytest.mark.parametrize("alpha, kept", [(1.0, True), (2.0, False)])
def test_gemm_weights_are_shared_unless_computed(tmp_path, alpha, kept):
    """Gemm with transB=0 (a transposed view of the file's weight) and alpha=1 keeps float32; alpha=2 is a
    computed weight, in float64. Either way the IR computes what onnxruntime computes."""
    w, b = rand(6, 4, seed=2), rand(4, seed=3)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], alpha=alpha, transB=0)
    path = save(make_model([node], {"x": [2, 6]}, ["y"], 17, {"w": w, "b": b}), tmp_path)
    graph = load_model(path).graph({"x": (2, 6)})
    (linear,) = graph.nodes
    assert linear.params["weight"].dtype == (torch.float32 if kept else torch.float64)
    np.testing.assert_array_equal(linear.params["weight"].numpy(), alpha * w.T.astype(np.float64))
    result = lrpaudit.audit(path, Rule("epsilon"), {"x": rand(2, 6, seed=4)}, dtype="float32", fidelity="all")
    assert result.fidelity.passed and result.fidelity.max_rel_diff < 1e-6


def previous_graph(model, shapes):
    """The canonical graph as the float64-master-copy design made it: raw IR, params as exact float64 copies,
    then the same passes."""
    raw = model.raw_graph(shapes)
    for node in raw.nodes:
        node.params = {k: t.double() if t.is_floating_point() else t for k, t in node.params.items()}
    return model._after_passes(raw, canonicalize(raw))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_audits_give_the_numbers_of_float64_master_copies(files, fmt, dtype):
    model = load_model(files[fmt])
    shapes = {"x": tuple(X.shape)}
    now, before = model.graph(shapes), previous_graph(load_model(files[fmt]), shapes)
    assert [n.id for n in now.nodes] == [n.id for n in before.nodes]
    for new, old in zip(now.nodes, before.nodes):  # same values; only the storage precision differs
        assert new.params.keys() == old.params.keys()
        for key in new.params:
            assert torch.equal(new.params[key].double(), old.params[key].double()), (new.id, key)
    snapshot = {n.id: {k: t.clone() for k, t in n.params.items()} for n in now.nodes}

    def rules(node):
        if node.op in ("conv", "linear"):
            return Rule("zplus") if node.op == "conv" else Rule("epsilon")
        return None

    ours = propagate(now, {"x": X}, rules, dtype=dtype)
    theirs = propagate(before, {"x": X}, rules, dtype=dtype)
    assert torch.equal(ours.input_relevance["x"], theirs.input_relevance["x"])
    assert torch.equal(ours.output_relevance, theirs.output_relevance)
    for a, b in zip(ours.records, theirs.records):
        for field in ("r_received", "r_passed", "absorbed_bias", "absorbed_stabilizer", "degenerate"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (a.node_id, field)
    # the audit wrote to no param (they are shared with the file's buffers)
    for node in now.nodes:
        for key, tensor in node.params.items():
            assert tensor.dtype == snapshot[node.id][key].dtype and torch.equal(
                tensor, snapshot[node.id][key]
            )


def test_the_api_audit_of_a_float32_file_matches_the_previous_design(files):
    """The whole audit (fidelity included) on the kept params, against the same audit on float64 copies."""
    shapes = {"x": tuple(X.shape)}
    now, before = load_model(files["onnx"]), load_model(files["onnx"])
    before._graphs[tuple(sorted(shapes.items()))] = previous_graph(before, shapes)

    def run(model):
        request = lrpaudit.AuditRequest(
            model, preset="epsilon-plus-flat", inputs={"x": X.numpy()}, dtype="float32", fidelity="all"
        )
        return lrpaudit.run_audit(request)

    ours, theirs = run(now), run(before)
    assert [dict(row) for row in ours.layer_rows()] == [dict(row) for row in theirs.layer_rows()]
    assert [vars(s) for s in ours.samples] == [vars(s) for s in theirs.samples]
    assert replace(ours.fidelity, tensors=[]) == replace(theirs.fidelity, tensors=[])
