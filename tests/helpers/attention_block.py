"""A small attention block as a torch module and as real files (legacy and dynamo ONNX, traced TorchScript),
float64, shared by the cross-checks and the report tests through the session export cache.

The module has what today's frontends convert without LayerNorm support: a fused QKV projection split with
``chunk``, multi-head attention (Q K^T / sqrt(d), softmax inside the graph, A V), a residual add, a SiLU-gated
MLP (the legacy exporter writes SiLU as ``x * sigmoid(x)``), mean pooling over tokens, tanh and a linear head
(GELU, an erf, has no float64 kernel in onnxruntime). ``Block.mode`` switches on the AttnLRP or CP-LRP gradient
modifications (written independently of lrpaudit and of LXT), so that input x gradient is an oracle.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from tests.helpers.lrp_gradients import IdentityRule, Scale

DT = torch.float64
EXPORTS = ("legacy", "dynamo", "traced")


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
            a, b = Scale.apply(a, 0.5), Scale.apply(b, 0.5)
        elif self.mode == "cp":
            a, b = (a.detach(), b) if constant_a else (a, b.detach())
        return op(a, b)

    def _act(self, fn, x):
        return IdentityRule.apply(x, fn) if self.mode else fn(x)

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


def block_model() -> Block:
    torch.manual_seed(0)
    return Block().to(DT).eval()


def block_example() -> torch.Tensor:
    return torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1), dtype=DT)


def block_files(export_cache) -> dict[str, Path]:
    """The block exported once per test session by each exporter."""

    def make(exporter):
        def write(path):
            model, x = block_model(), block_example()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if exporter == "traced":
                    torch.jit.trace(model, x).save(str(path))
                else:
                    torch.onnx.export(model, (x,), str(path), dynamo=exporter == "dynamo", opset_version=18)

        suffix = "pt" if exporter == "traced" else "onnx"
        return export_cache(f"attention-block-{exporter}.{suffix}", write)

    return {exporter: make(exporter) for exporter in EXPORTS}
