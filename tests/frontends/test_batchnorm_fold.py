"""BatchNorm folding: exact in float64 against the unfolded forward, and refused where it would not be exact.

Two oracles: the raw IR (BatchNorm as ``affine``) run in float64 next to the folded IR, and the torch model in
float64 for ONNX exports made with folding disabled (so the file still holds ``BatchNormalization``).
"""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from lrpaudit.forward import run_forward
from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.frontends.onnx.convert import convert_graph
from lrpaudit.ir import Graph, Node
from lrpaudit.passes import canonicalize, fold_batchnorm
from tests.helpers.numeric import rel_diff
from tests.helpers.reference_models import export_onnx, randomize_batchnorm

TOL = 1e-12


def bn_affine(node_id: str, value: str, out: str, channels: int, gen: torch.Generator) -> Node:
    """An IR ``affine`` as the ONNX frontend makes it from an eval-mode BatchNorm with random statistics."""
    gamma = 0.5 + torch.rand(channels, generator=gen, dtype=torch.float64)
    beta = 0.3 * torch.randn(channels, generator=gen, dtype=torch.float64)
    mean = 0.5 * torch.randn(channels, generator=gen, dtype=torch.float64)
    var = 0.5 + 1.5 * torch.rand(channels, generator=gen, dtype=torch.float64)
    scale = gamma / torch.sqrt(var + 1e-5)
    return Node(
        node_id,
        "affine",
        [value],
        [out],
        {"source": "batchnorm"},
        {"weight": scale, "bias": beta - mean * scale},
        {"ops": ["BatchNormalization"]},
    )


def with_shapes(graph: Graph, x: torch.Tensor) -> Graph:
    values = run_forward(graph, {"x": x}, torch.float64)
    graph.shapes = {name: tuple(v.shape) for name, v in values.items()}
    return graph


def layer_then_bn(op: str, weight: torch.Tensor, bias: torch.Tensor | None, attrs: dict, channels: int, x):
    gen = torch.Generator().manual_seed(7)
    params = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    layer = Node("layer", op, ["x"], ["h"], attrs, params, {"ops": [op]})
    graph = Graph(["x"], ["y"], [layer, bn_affine("bn", "h", "y", channels, gen)])
    return with_shapes(graph, x)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


CONV2D = {"stride": (1, 1), "dilation": (1, 1), "pads": (1, 1, 1, 1), "groups": 1}
CASES = {
    "conv2d+bn": ("conv", rand(6, 3, 3, 3), rand(6, seed=1), CONV2D, 6, (2, 3, 8, 8)),
    "conv2d_nobias+bn": ("conv", rand(6, 3, 3, 3), None, CONV2D | {"stride": (2, 1)}, 6, (2, 3, 8, 8)),
    "depthwise+bn": ("conv", rand(6, 1, 3, 3), rand(6, seed=1), CONV2D | {"groups": 6}, 6, (2, 6, 7, 7)),
    "grouped_conv+bn": ("conv", rand(6, 2, 3, 3), rand(6, seed=1), CONV2D | {"groups": 3}, 6, (2, 6, 7, 7)),
    "conv1d+bn": (
        "conv",
        rand(5, 3, 3),
        rand(5, seed=1),
        {"stride": (1,), "dilation": (2,), "pads": (0, 1), "groups": 1},
        5,
        (2, 3, 11),
    ),
    "conv3d+bn": (
        "conv",
        rand(4, 2, 2, 2, 2),
        None,
        {"stride": (1, 1, 1), "dilation": (1, 1, 1), "pads": (0,) * 6, "groups": 1},
        4,
        (2, 2, 4, 4, 4),
    ),
    "linear+bn1d": ("linear", rand(7, 5), rand(7, seed=1), {}, 7, (3, 5)),
    "conv_transpose_g2+bn": (
        "conv_transpose",
        rand(4, 3, 3, 3),  # (C_in, C_out / groups, k, k): C_out = 6
        rand(6, seed=1),
        {"stride": (2, 2), "dilation": (1, 1), "pads": (1, 1, 1, 1), "output_padding": (1, 1), "groups": 2},
        6,
        (2, 4, 5, 5),
    ),
    "conv_transpose_g1+bn": (
        "conv_transpose",
        rand(4, 3, 2, 2),
        None,
        {"stride": (2, 2), "dilation": (1, 1), "pads": (0, 0, 0, 0), "output_padding": (0, 0), "groups": 1},
        3,
        (2, 4, 5, 5),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fold_matches_unfolded_float64(case):
    op, weight, bias, attrs, channels, x_shape = CASES[case]
    x = rand(*x_shape, seed=3)
    graph = layer_then_bn(op, weight, bias, attrs, channels, x)
    before = run_forward(graph, {"x": x}, torch.float64)["y"]
    folded = fold_batchnorm(graph)
    assert [n.op for n in folded.nodes] == [op]
    assert folded.nodes[0].origin["ops"] == [op, "BatchNormalization"]
    assert folded.nodes[0].outputs == ["y"]
    after = run_forward(folded, {"x": x}, torch.float64)["y"]
    assert rel_diff(after, before) <= TOL
    # the pass is pure: the input graph still computes the unfolded function with its own params
    assert [n.op for n in graph.nodes] == [op, "affine"]
    assert torch.equal(run_forward(graph, {"x": x}, torch.float64)["y"], before)


def test_fold_against_torch_grouped_conv_transpose(tmp_path):
    """nn.ConvTranspose2d(groups=2) + BatchNorm2d through both exporters with folding disabled."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), nn.BatchNorm2d(6)
    )
    model = randomize_batchnorm(model, 0).eval()
    x = rand(2, 4, 5, 5, seed=4)
    with torch.no_grad():
        expected = model.double()(x)
    model.float()
    for dynamo in (False, True):
        path = export_onnx(
            model,
            x.float(),
            tmp_path / f"convt_{dynamo}.onnx",
            dynamo=dynamo,
            opset=17 + 3 * dynamo,
            fold=False,
        )
        assert "BatchNormalization" in [n.op_type for n in onnx.load(str(path)).graph.node]
        graph = load_onnx(path).graph({"x": (2, 4, 5, 5)})
        assert [n.op for n in graph.nodes] == ["conv_transpose"]
        assert rel_diff(run_forward(graph, {"x": x}, torch.float64)[graph.outputs[0]], expected) <= TOL


# ---------------------------------------------------------------- through ONNX, folded vs raw and vs torch


class ConvBN(nn.Module):
    def __init__(self, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class LinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(6, 5), nn.BatchNorm1d(5)

    def forward(self, x):
        return self.bn(self.fc(x.flatten(1)[:, :6]))


class BNFirst(nn.Module):
    """BatchNorm on the input, before a padded conv: not foldable forwards (padding does not commute)."""

    def __init__(self):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.bn(x))


class BNAfterAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(6, 4, 3, padding=1), nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.a(x) + self.b(x)))


class ConvTwoConsumers(nn.Module):
    """The conv output feeds the BatchNorm and a skip connection: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)

    def forward(self, x):
        h = self.conv(x)
        return torch.relu(self.bn(h)) + h


class LinearOn3D(nn.Module):
    """Linear over the last axis, BatchNorm1d over axis 1 of (N, C, L): different axes, not foldable."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(5, 5), nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.fc(x.mean(dim=3)))


TORCH_CASES = {
    "conv+bn": (lambda: ConvBN(), False),
    "depthwise+bn": (lambda: ConvBN(groups=6), False),
    "linear+bn1d": (LinearBN, False),
    "bn_first": (BNFirst, True),
    "bn_after_add": (BNAfterAdd, True),
    "conv_two_consumers": (ConvTwoConsumers, True),
    "linear_on_3d+bn1d": (LinearOn3D, True),
}


EXPORTED_CASES = [(case, False) for case in TORCH_CASES] + [
    (case, True) for case, (_, keep) in TORCH_CASES.items() if keep
]


@pytest.mark.parametrize(
    "case,dynamo", EXPORTED_CASES, ids=[f"{c}-{'dynamo' if d else 'legacy'}" for c, d in EXPORTED_CASES]
)
def test_exported_batchnorm_folds_exactly_or_stays_affine(tmp_path, case, dynamo):
    factory, stays_affine = TORCH_CASES[case]
    torch.manual_seed(1)
    model = randomize_batchnorm(factory(), 1).eval()
    x = rand(2, 6, 5, 5, seed=5)
    path = export_onnx(
        model, x.float(), tmp_path / "m.onnx", dynamo=dynamo, opset=20 if dynamo else 17, fold=False
    )
    onnx_model = load_onnx(path)
    shapes = {"x": tuple(x.shape)}
    raw = convert_graph(onnx_model.proto, path, shapes)
    graph = onnx_model.graph(shapes)
    assert graph is not raw and canonicalize(raw) is not raw
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert [n.op for n in raw.nodes].count("affine") == n_bn
    affine = [n for n in graph.nodes if n.op == "affine"]
    assert len(affine) == (n_bn if stays_affine else 0)
    with torch.no_grad():
        expected = model.double()(x)
    ours = run_forward(graph, {"x": x}, torch.float64)[graph.outputs[0]]
    unfolded = run_forward(raw, {"x": x}, torch.float64)[raw.outputs[0]]
    assert rel_diff(ours, expected) <= TOL
    assert rel_diff(ours, unfolded) <= TOL
    if stays_affine:  # an affine is a per-channel scale and shift: the BN's own statistics
        bn = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        assert torch.allclose(affine[0].params["weight"], scale, rtol=1e-6)
        shift = bn.bias.double() - bn.running_mean.double() * scale
        assert torch.allclose(affine[0].params["bias"], shift, rtol=1e-6, atol=1e-7)


def test_exporter_folding_is_only_float32_exact(tmp_path):
    """A sanity check of the oracle: the exporter's float32 BN folding is ~1e-7 away, not 1e-12."""
    torch.manual_seed(2)
    model = randomize_batchnorm(ConvBN(), 2).eval()
    x = rand(2, 6, 5, 5, seed=6)
    path = export_onnx(model, x.float(), tmp_path / "folded.onnx", dynamo=False, opset=17, fold=True)
    assert "BatchNormalization" not in [n.op_type for n in onnx.load(str(path)).graph.node]
    graph = load_onnx(path).graph({"x": tuple(x.shape)})
    with torch.no_grad():
        expected = model.double()(x)
    diff = rel_diff(run_forward(graph, {"x": x}, torch.float64)[graph.outputs[0]], expected)
    assert 1e-12 < diff < 1e-5
