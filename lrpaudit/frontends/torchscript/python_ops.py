"""List, scalar and shape ops of TorchScript graphs evaluated in Python (they never reach the IR)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch

from .values import real


def _format(fmt: str, *args: Any) -> str:
    for arg in args:
        fmt = fmt.replace("{}", str(real(arg)), 1)
    return fmt


def _append(items: list, item: Any) -> list:
    items.append(item)
    return items


def _set_item(items: list, index: int, item: Any) -> list:
    items[index] = item
    return items


def _len(value: Any) -> int:
    value = real(value)
    return int(value.shape[0]) if isinstance(value, torch.Tensor) else len(value)


# ScalarType codes as TorchScript graphs store them (c10/core/ScalarType.h).
SCALAR_TYPES = {
    0: torch.uint8,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.int64,
    5: torch.float16,
    6: torch.float32,
    7: torch.float64,
    11: torch.bool,
    15: torch.bfloat16,
}


def _tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> torch.Tensor:
    dtype = SCALAR_TYPES[dtype] if isinstance(dtype, int) else dtype
    return torch.tensor(real(data), dtype=dtype)


PYTHON_OPS: dict[str, Callable[..., Any]] = {
    "aten::tensor": _tensor,
    "aten::as_tensor": _tensor,
    "aten::__getitem__": lambda items, index: items[index],
    "aten::len": _len,
    "aten::append": _append,
    "aten::_set_item": _set_item,
    "aten::list": lambda items: list(items),
    "aten::copy": lambda items: list(items) if isinstance(items, list) else dict(items),
    "aten::extend": lambda items, more: items.extend(more),
    "aten::__contains__": lambda items, item: item in items,
    "aten::__is__": lambda a, b: a is b,
    "aten::__isnot__": lambda a, b: a is not b,
    "aten::__not__": lambda a: not a,
    "aten::format": _format,
    "aten::warn": lambda *args: None,
    "aten::is_grad_enabled": lambda: True,
    "aten::is_autocast_enabled": lambda *args: False,
    "aten::is_autocast_cpu_enabled": lambda: False,
    "aten::is_scripting": lambda: True,
    "aten::_get_tracing_state": lambda: None,
    "aten::keys": lambda d: list(d.keys()),
    "aten::values": lambda d: list(d.values()),
}

_BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "floordiv": operator.floordiv,
    "remainder": operator.mod,
    "pow": operator.pow,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "gt": operator.gt,
    "le": operator.le,
    "ge": operator.ge,
    "__and__": operator.and_,
    "__or__": operator.or_,
    "__xor__": operator.xor,
}

SCALAR_OPS: dict[str, Callable[..., Any]] = {f"aten::{k}": v for k, v in _BINARY.items()}
SCALAR_OPS.update(
    {
        "aten::neg": operator.neg,
        "aten::Int": int,
        "aten::Float": float,
        "aten::Bool": bool,
        "aten::ScalarImplicit": lambda x: x,
        "aten::str": str,
        "aten::ceil": math.ceil,
        "aten::floor": math.floor,
        "aten::sqrt": math.sqrt,
        "aten::abs": abs,
        "prim::min": lambda *a: min(*a),
        "prim::max": lambda *a: max(*a),
        "aten::min": lambda *a: min(*a),
        "aten::max": lambda *a: max(*a),
    }
)

# Ops that read only the metadata of an activation: evaluated on the real tensor, the result is a constant.
SHAPE_QUERIES = frozenset(
    {
        "aten::size",
        "aten::sym_size",
        "aten::dim",
        "aten::numel",
        "aten::_shape_as_tensor",
        "aten::is_floating_point",
        "aten::is_complex",
        "aten::is_contiguous",
        "aten::is_nested",
        "aten::stride",
        "aten::get_device",
        "aten::element_size",
        "aten::zeros_like",
        "aten::ones_like",
        "aten::full_like",
        "aten::empty_like",
        "aten::new_zeros",
        "aten::new_ones",
        "aten::new_full",
        "aten::new_empty",
    }
)
