"""The registry of IR op forwards: ``@register(name)`` and ``run_op``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import UnsupportedOpError

Tensor = torch.Tensor
OpFn = Callable[[list[Tensor], dict[str, Any], dict[str, Tensor]], Any]

OPS: dict[str, OpFn] = {}


def register(name: str) -> Callable[[OpFn], OpFn]:
    def deco(fn: OpFn) -> OpFn:
        OPS[name] = fn
        return fn

    return deco


def run_op(op: str, inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> Tensor:
    """Run one IR op; an op with no forward is an error naming it."""
    fn = OPS.get(op)
    if fn is None:
        raise UnsupportedOpError(f"IR op {op!r} has no forward implementation")
    return fn(inputs, attrs, params)
