"""Ops that only move values: reshape, permute, concat (also with constant parts), slice, gather, pad, expand,
roll, and ``where`` with a constant condition."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import _pad_pairs
from .registry import Tensor, register  # noqa: F401

# ---------------------------------------------------------------- routing


@register("reshape")
def reshape(inputs, attrs, params):
    return inputs[0].reshape(attrs["shape"])


@register("permute")
def permute(inputs, attrs, params):
    return inputs[0].permute(attrs["perm"])


@register("concat")
def concat(inputs, attrs, params):
    """Concatenate along ``axis``; ``constants`` ((position, param name), ...) puts constant parts (a class token,
    register tokens) at those positions of the operand list."""
    operands = list(inputs)
    for position, name in sorted(attrs.get("constants", ())):
        operands.insert(position, params[name])
    return torch.cat(operands, dim=attrs["axis"])


@register("slice")
def slice_(inputs, attrs, params):
    """Index an axis with a precomputed list of positions (covers negative steps and clamping)."""
    x = inputs[0]
    for axis, index in zip(attrs["axes"], attrs["indices"]):
        x = x.index_select(axis, torch.as_tensor(index, dtype=torch.long, device=x.device))
    return x


@register("gather")
def gather(inputs, attrs, params):
    x, axis = inputs[0], attrs["axis"]
    indices = torch.as_tensor(attrs["indices"], dtype=torch.long, device=x.device)
    picked = x.index_select(axis, indices.reshape(-1))
    return picked.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1 :]))


def _pad_index(size: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source positions of a reflect/edge-padded axis (negative pads crop), as numpy.pad defines them."""
    index = torch.arange(-before, size + after, device=device)
    if mode == "edge" or size == 1:
        return index.clamp(0, size - 1)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


@register("pad")
def pad(inputs, attrs, params):
    """ONNX Pad: constant (F.pad), or reflect/edge on any axes by index selection (F.pad limits those)."""
    x, pads, mode = inputs[0], attrs["pads"], attrs.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, _pad_pairs(pads), value=attrs.get("value", 0.0))
    rank = x.dim()
    for axis in range(rank):
        before, after = int(pads[axis]), int(pads[axis + rank])
        if before or after:
            x = x.index_select(axis, _pad_index(x.shape[axis], before, after, mode, x.device))
    return x


@register("expand")
def expand(inputs, attrs, params):
    """Broadcast to ``shape`` (torch ``expand`` semantics; -1 keeps a dimension)."""
    return inputs[0].expand(tuple(attrs["shape"]))


@register("roll")
def roll(inputs, attrs, params):
    """Cyclic shift along ``dims`` by ``shifts`` (Swin's shifted windows)."""
    return torch.roll(inputs[0], tuple(attrs["shifts"]), tuple(attrs["dims"]))


@register("where")
def where(inputs, attrs, params):
    """``where(cond, a, b)`` with a constant boolean ``cond``: two activations, or one and a constant ``other``
    (the activation is taken where ``cond == input_when``, default True: ``masked_fill`` is input_when=False)."""
    cond = params["cond"].to(torch.bool)
    if len(inputs) == 2:
        return torch.where(cond, inputs[0], inputs[1])
    other = params["other"]
    if attrs.get("input_when", True):
        return torch.where(cond, inputs[0], other)
    return torch.where(cond, other, inputs[0])
