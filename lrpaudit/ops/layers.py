"""Linear-type ops (linear, conv, conv_transpose, affine) as ``*_apply(x, weight, bias, attrs)`` so the rules can
run the same map with modified weights, and the pooling ops, with ONNX padding semantics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UnsupportedOpError
from .registry import OpFn, Tensor, register


def _pad_pairs(pads: Sequence[int]) -> list[int]:
    """ONNX-style pads ``[b1..bn, e1..en]`` to F.pad order (last dim first)."""
    n = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(n)):
        out += [int(pads[axis]), int(pads[axis + n])]
    return out


def _symmetric(pads: Sequence[int]) -> bool:
    n = len(pads) // 2
    return all(pads[i] == pads[i + n] for i in range(n))


def _ceil_extra(
    padded: Sequence[int], kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int]
) -> list[int]:
    """Extra end padding (F.pad order) that makes a window op over ``padded`` sizes give ceil_mode's output size.

    As in ONNX and torch, the last window must start inside the input or its begin padding.
    """
    n = len(kernel)
    extra: list[int] = []
    for axis in reversed(range(n)):
        size, k, s = padded[axis], kernel[axis], stride[axis]
        out = -(-(size - k) // s) + 1
        if (out - 1) * s >= size - pads[axis + n]:
            out -= 1
        extra += [0, max(0, (out - 1) * s + k - size)]
    return extra


# ---------------------------------------------------------------- linear-type ops


def linear_apply(x: Tensor, weight: Tensor, bias: Tensor | None, attrs: dict[str, Any]) -> Tensor:
    """y = x W^T + b over the last axis."""
    return F.linear(x, weight, bias)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_apply(x: Tensor, weight: Tensor, bias: Tensor | None, attrs: dict[str, Any]) -> Tensor:
    """N-d convolution; asymmetric padding is applied explicitly (zeros) before an unpadded conv."""
    dims = weight.dim() - 2
    pads = attrs["pads"]
    if _symmetric(pads):
        padding: Any = tuple(pads[:dims])
    else:
        x = F.pad(x, _pad_pairs(pads))
        padding = 0
    return _CONV[dims](x, weight, bias, attrs["stride"], padding, attrs["dilation"], attrs["groups"])


def conv_transpose_apply(x: Tensor, weight: Tensor, bias: Tensor | None, attrs: dict[str, Any]) -> Tensor:
    """N-d transposed convolution with ONNX padding semantics (pads crop, output_padding extends)."""
    dims = weight.dim() - 2
    pads, out_pad = attrs["pads"], attrs["output_padding"]
    stride, dilation, groups = attrs["stride"], attrs["dilation"], attrs["groups"]
    fits_torch = _symmetric(pads) and all(op < max(s, d) for op, s, d in zip(out_pad, stride, dilation))
    if fits_torch:
        return _CONV_T[dims](x, weight, bias, stride, tuple(pads[:dims]), tuple(out_pad), groups, dilation)
    y = _CONV_T[dims](x, weight, None, stride, 0, 0, groups, dilation)
    crop = [p for axis in reversed(range(dims)) for p in (-pads[axis], out_pad[axis] - pads[axis + dims])]
    y = F.pad(y, crop)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * dims)
    return y


def affine_apply(x: Tensor, weight: Tensor, bias: Tensor | None, attrs: dict[str, Any]) -> Tensor:
    """Per-channel scale and shift on axis 1 (an unfolded BatchNorm)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = x * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


LINEAR_APPLY = {
    "linear": linear_apply,
    "conv": conv_apply,
    "conv_transpose": conv_transpose_apply,
    "affine": affine_apply,
}


def _linear_type(name: str) -> OpFn:
    apply = LINEAR_APPLY[name]

    def forward(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> Tensor:
        return apply(inputs[0], params["weight"], params.get("bias"), attrs)

    return forward


for _name in LINEAR_APPLY:
    register(_name)(_linear_type(_name))


# ---------------------------------------------------------------- pooling


def avgpool_apply(x: Tensor, attrs: dict[str, Any]) -> Tensor:
    """Average pooling with ONNX semantics (asymmetric pads, count_include_pad, ceil_mode)."""
    kernel, stride, pads = attrs["kernel"], attrs["stride"], attrs["pads"]
    dims = len(kernel)
    ceil_mode, include_pad = attrs.get("ceil_mode", False), attrs.get("count_include_pad", False)
    simple = _symmetric(pads) and all(pads[i] <= kernel[i] // 2 for i in range(dims)) and dims in (1, 2, 3)
    if simple and not (ceil_mode and include_pad):
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        return fn(x, kernel, stride, tuple(pads[:dims]), ceil_mode, include_pad)
    # General case: window sum divided by the number of counted positions.
    xs = x.reshape((x.shape[0] * x.shape[1], 1) + tuple(x.shape[2:]))
    if dims == 1:
        xs = xs.unsqueeze(-1)
        kernel, stride, pads = (*kernel, 1), (*stride, 1), (pads[0], 0, pads[1], 0)
    ones_w = torch.ones((1, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
    conv = _CONV[len(kernel)]
    padded = F.pad(xs, _pad_pairs(pads))
    mask = torch.ones((1, 1) + tuple(xs.shape[2:]), dtype=x.dtype, device=x.device)
    mask = F.pad(mask, _pad_pairs(pads), value=1.0 if include_pad else 0.0)
    if ceil_mode:  # windows running past the padded input: extra zeros, never counted
        extra = _ceil_extra(padded.shape[2:], kernel, stride, pads)
        padded, mask = F.pad(padded, extra), F.pad(mask, extra)
    total = conv(padded, ones_w, None, stride)
    count = conv(mask, ones_w, None, stride)
    y = total / count
    if dims == 1:
        y = y.squeeze(-1)
    return y.reshape(tuple(x.shape[:2]) + tuple(y.shape[2:]))


@register("avgpool")
def avgpool(inputs, attrs, params):
    if attrs.get("ceil_mode") and attrs.get("count_include_pad"):
        raise UnsupportedOpError("AveragePool with ceil_mode=1 and count_include_pad=1 is not supported")
    return avgpool_apply(inputs[0], attrs)


@register("maxpool")
def maxpool(inputs, attrs, params):
    x = inputs[0]
    kernel, stride, pads, dilation = attrs["kernel"], attrs["stride"], attrs["pads"], attrs["dilation"]
    dims = len(kernel)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
    if _symmetric(pads) and all(pads[i] <= kernel[i] // 2 for i in range(dims)):
        return fn(x, kernel, stride, tuple(pads[:dims]), dilation, attrs.get("ceil_mode", False))
    x = F.pad(x, _pad_pairs(pads), value=-math.inf)
    if attrs.get("ceil_mode", False):  # torch would let the last window start in the explicit end padding
        window = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        x = F.pad(x, _ceil_extra(x.shape[2:], window, stride, pads), value=-math.inf)
    return fn(x, kernel, stride, 0, dilation, False)


@register("global_avgpool")
def global_avgpool(inputs, attrs, params):
    x = inputs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=attrs.get("keepdims", True))


@register("mean")
def mean(inputs, attrs, params):
    return inputs[0].mean(dim=tuple(attrs["axes"]), keepdim=attrs.get("keepdims", True))
