"""Small argument helpers shared by the aten converters (``ops``, ``ops_shape``)."""

from __future__ import annotations

import re
from typing import Any

import torch

from .values import Act, Call, Refuse

Tensor = torch.Tensor


def norm_dim(axis: int, rank: int) -> int:
    return int(axis) + rank if int(axis) < 0 else int(axis)


def int_tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    values = [int(v) for v in value]
    return tuple(values * n) if len(values) == 1 else tuple(values)


def dims_from_kind(kind: str) -> int:
    match = re.search(r"(\d)d", kind)
    return int(match.group(1)) if match else 2


def self_act(call: Call) -> Act:
    """The op's first argument (``self``/``input``), which must be an activation."""
    first = call.schema.arguments[0].name
    return call.act(first)


def f64(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def scalar(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise Refuse(f"{what} must be a scalar")
        return float(value)
    return float(value)


def check_batched(x: Act, dims: int, what: str) -> None:
    if x.value.dim() != dims + 2:
        raise Refuse(f"{what} on an input of rank {x.value.dim()} (unbatched input is not supported)")
