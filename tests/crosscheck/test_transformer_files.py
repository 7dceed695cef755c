"""Attention blocks as real files (legacy and dynamo ONNX, traced TorchScript, float64): lrpaudit's relevance
against ``x * grad`` of the torch module itself with the AttnLRP / CP-LRP gradient modifications (written here,
independently of lrpaudit and of LXT), and every layer's residual at rounding under the attnlrp and cp-lrp presets.

The module has what today's frontends convert without LayerNorm support: a fused QKV projection split with
``chunk``, multi-head attention (Q K^T / sqrt(d), softmax inside the graph, A V), a residual add, a SiLU-gated
MLP (the legacy exporter writes SiLU as ``x * sigmoid(x)``), mean pooling over tokens, tanh and a linear head
(GELU, an erf, has no float64 kernel in onnxruntime).
With every stabilizer at 0 the rules equal input x gradient of the modified forward (DESIGN section 12).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import lrpaudit
from lrpaudit.config import load_config
from tests.helpers.numeric import rel_diff

DT = torch.float64
EXPORTS = ("legacy", "dynamo", "traced")

LRP0_CONFIG = """version: 1
rules:
  - match: {op: linear}
    rule: zero
  - match: {op: [matmul, einsum, mul]}
    rule: RULE
    epsilon: 0.0
  - match: {op: softmax}
    rule: taylor
  - match: {op: [add, mean]}
    rule: norm
    stabilizer: 0.0
"""


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class _Identity(torch.autograd.Function):
    """fn(x) forward, gradient fn(x) / x: the identity rule as input x gradient."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(y / x)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


class Block(nn.Module):
    def __init__(self, dim=8, heads=2, hidden=12, classes=3):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.gate, self.up, self.down = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, classes)
        self.mode = None  # None (plain), "attnlrp" or "cp": the gradient modifications of input x gradient

    def _product(self, a, b, constant_a: bool, op):
        if self.mode == "attnlrp":
            a, b = _Scale.apply(a, 0.5), _Scale.apply(b, 0.5)
        elif self.mode == "cp":
            a, b = (a.detach(), b) if constant_a else (a, b.detach())
        return op(a, b)

    def _act(self, fn, x):
        return _Identity.apply(x, fn) if self.mode else fn(x)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)

        def split(t):
            return t.reshape(batch, tokens, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        scores = self._product(q, k.transpose(-1, -2), False, torch.matmul) / math.sqrt(dim // self.heads)
        probs = torch.softmax(scores, dim=-1)
        context = self._product(probs, v, True, torch.matmul).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.out(context)
        gated = self._product(self._act(nn.functional.silu, self.gate(x)), self.up(x), True, torch.mul)
        x = x + self.down(gated)
        return self.head(self._act(torch.tanh, x.mean(dim=1)))


def _model() -> Block:
    torch.manual_seed(0)
    return Block().to(DT).eval()


def _example() -> torch.Tensor:
    return torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1), dtype=DT)


@pytest.fixture(scope="module")
def files(export_cache):
    def make(exporter):
        def write(path):
            model, x = _model(), _example()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if exporter == "traced":
                    torch.jit.trace(model, x).save(str(path))
                else:
                    torch.onnx.export(model, (x,), str(path), dynamo=exporter == "dynamo", opset_version=18)

        suffix = "pt" if exporter == "traced" else "onnx"
        return export_cache(f"attention-block-{exporter}.{suffix}", write)

    return {exporter: make(exporter) for exporter in EXPORTS}


def _expected(mode: str):
    model, x = _model(), _example().requires_grad_(True)
    model.mode = mode
    out = model(x)
    target = out.detach().argmax(dim=1)
    (grad,) = torch.autograd.grad(out[torch.arange(3), target].sum(), x)
    return (x * grad).detach().numpy(), target


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
@pytest.mark.parametrize("exporter", EXPORTS)
def test_relevance_equals_gradient_times_input_of_the_modified_module(files, tmp_path, exporter, mode):
    config = tmp_path / "lrp0.yaml"
    config.write_text(LRP0_CONFIG.replace("RULE", "uniform" if mode == "attnlrp" else "constant_factor"))
    expected, target = _expected(mode)
    x = _example().numpy()
    result = lrpaudit.audit(
        str(files[exporter]),
        load_config(str(config)),
        x,
        target=target.tolist(),
        keep_relevance=True,
    )
    (name,) = [key for key in result.relevance if key not in ("targets", "output_relevance")]
    assert result.fidelity.passed
    assert rel_diff(result.relevance[name], expected) <= 1e-10


@pytest.mark.parametrize("preset", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("exporter", EXPORTS)
def test_presets_explain_every_layer_of_real_files(files, exporter, preset):
    result = lrpaudit.audit(
        str(files[exporter]), load_config(preset=preset).with_overrides(gate="explained"), _example().numpy()
    )
    rows = result.layer_rows()
    assert result.verdict == "pass", [r["hint"] for r in rows if r["verdict"] != "pass"]
    assert max(row["rel_residual"] for row in rows) <= 1e-12
    softmax = [row for row in rows if row["op"] == "softmax"]
    assert len(softmax) == 1 and softmax[0]["rule"] == "taylor"
    if preset == "attnlrp":
        assert softmax[0]["largest_category"] == "absorbed_softmax"
    else:  # the attention weights are constant: nothing reaches the softmax
        assert softmax[0]["r_received"] == 0.0
