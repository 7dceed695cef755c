"""The ops of attention blocks: softmax, products of two activations (matmul, einsum), and the normalizations
(LayerNorm, RMSNorm, GroupNorm, InstanceNorm)."""

from __future__ import annotations

from typing import Any

import torch

from .registry import Tensor, register


@register("matmul")
def matmul(inputs, attrs, params):
    return torch.matmul(inputs[0], inputs[1])


@register("softmax")
def softmax(inputs, attrs, params):
    return _coerced(inputs[0], attrs, torch.softmax)


@register("log_softmax")
def log_softmax(inputs, attrs, params):
    return _coerced(inputs[0], attrs, torch.log_softmax)


def _coerced(x: Tensor, attrs: dict[str, Any], fn) -> Tensor:
    """Softmax over one axis, or (ONNX opset < 13) over all axes from ``axis`` on, flattened."""
    axis = attrs["axis"]
    if not attrs.get("coerce_2d"):
        return fn(x, dim=axis)
    flat = x.reshape(tuple(x.shape[:axis]) + (-1,))
    return fn(flat, dim=-1).reshape(x.shape)


@register("einsum")
def einsum(inputs, attrs, params):
    """``torch.einsum(equation, a, b)`` of two activations (attention written as einsum)."""
    return torch.einsum(attrs["equation"], *inputs)


def normalize(x: Tensor, axes: tuple[int, ...], eps: float, center: bool) -> tuple[Tensor, Tensor]:
    """``(x - mu, sigma)`` over ``axes``: mu the mean (0 when not ``center``: RMSNorm), sigma the root of the mean
    square of ``x - mu`` plus ``eps``. The rules treat both statistics as constants."""
    centred = x - x.mean(dim=axes, keepdim=True) if center else x
    sigma = torch.sqrt((centred * centred).mean(dim=axes, keepdim=True) + eps)
    return centred, sigma


@register("layernorm")
def layernorm(inputs, attrs, params):
    """LayerNorm (``center``) or RMSNorm over the trailing ``axes``: ``(x - mu) / sigma * weight + bias``;
    ``weight`` and ``bias`` (optional) have the shape of the normalized dimensions."""
    centred, sigma = normalize(inputs[0], tuple(attrs["axes"]), attrs["eps"], attrs.get("center", True))
    y = centred / sigma
    if "weight" in params:
        y = y * params["weight"]
    if "bias" in params:
        y = y + params["bias"]
    return y


@register("groupnorm")
def groupnorm(inputs, attrs, params):
    """GroupNorm over ``groups`` groups of the channels (axis 1), InstanceNorm when groups = channels; then the
    per-channel ``weight`` and ``bias`` (optional)."""
    x, groups = inputs[0], attrs["groups"]
    grouped = x.reshape(x.shape[0], groups, -1)
    centred, sigma = normalize(grouped, (2,), attrs["eps"], True)
    y = (centred / sigma).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if "weight" in params:
        y = y * params["weight"].reshape(shape)
    if "bias" in params:
        y = y + params["bias"].reshape(shape)
    return y
