"""Small models for the engine tests that ``reference_models`` does not have: bias-free nets, plus the export /
load round trip into IR (legacy exporter, no constant folding, so the float64 IR equals the float64 torch model).
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import nn

from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.ir import Graph
from lrpaudit.rules.spec import LINEAR_TYPE, POOLS, Rule
from tests.helpers.reference_models import build, example_input, export_onnx


class Residual(nn.Module):
    """conv-relu, a skip connection around conv-relu-conv, relu, average pool, linear (bias on or off)."""

    def __init__(self, bias: bool):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=bias)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(4 * 3 * 3, 5, bias=bias)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        g = self.conv2(torch.relu(self.conv1(h)))
        y = self.pool(torch.relu(h + g))
        return self.head(torch.flatten(y, 1))


def mlp(bias: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(12, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 10, bias=bias),
        nn.ReLU(),
        nn.Linear(10, 4, bias=bias),
    ).eval()


def cnn(bias: bool, seed: int = 0) -> nn.Module:
    """conv, relu, max pool, grouped conv, relu, padded average pool, linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, padding=1, groups=2, bias=bias),
        nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5, bias=bias),
    ).eval()


def residual(bias: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Residual(bias).eval()


LOCAL = {
    "mlp": (mlp, (12,)),
    "cnn": (cnn, (2, 8, 8)),
    "residual": (residual, (2, 6, 6)),
}


def local_model(name: str, bias: bool, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = LOCAL[name]
    return factory(bias, seed), shape


@cache
def onnx_graph(kind: str, name: str, bias: bool, batch: int, seed: int = 0) -> tuple[nn.Module, Graph]:
    """(float64 torch model, IR graph) for a reference model (``kind="ref"``) or a local one (``"local"``)."""
    if kind == "ref":
        model = build(name, seed)
        example = example_input(name, batch=batch)
    else:
        model, shape = local_model(name, bias, seed)
        example = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
    graph = onnx_round_trip(model, example)  # float32 export first, then the float64 oracle copy
    return model.double(), graph


def onnx_round_trip(model: nn.Module, example: torch.Tensor) -> Graph:
    """Export (legacy exporter, opset 17, no folding) to a temporary file, load it as IR, remove the file."""
    with tempfile.TemporaryDirectory(prefix="lrpaudit-engine-tests-") as tmp:
        path = export_onnx(model, example, Path(tmp) / "model.onnx", False, 17, fold=False)
        return load_onnx(path).graph({"x": tuple(example.shape)})


def rules_for(linear: Rule, pool: Rule | None = None, add: Rule | None = None):
    """A rule callable: ``linear`` on linear-type nodes, ``pool`` on pools, ``add`` on adds (None: the default)."""

    def choose(node):
        if node.op in LINEAR_TYPE:
            return linear
        if node.op in POOLS:
            return pool
        if node.op == "add":
            return add
        return None

    return choose
