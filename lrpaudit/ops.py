"""Forward computation of each IR op, one small torch function per op.

Every op function takes ``(inputs, attrs, params)`` with params already cast to the execution dtype and returns
one tensor (``split`` returns a list). Linear-type ops are written as ``*_apply(x, weight, bias, attrs)`` so the
LRP rules can run the same map with modified weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UnsupportedOpError

Tensor = torch.Tensor
OpFn = Callable[[list[Tensor], dict[str, Any], dict[str, Tensor]], Any]

OPS: dict[str, OpFn] = {}


def register(name: str) -> Callable[[OpFn], OpFn]:
    def deco(fn: OpFn) -> OpFn:
        OPS[name] = fn
        return fn

    return deco


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


# ---------------------------------------------------------------- elementwise activations


@register("relu")
def relu(inputs, attrs, params):
    return F.relu(inputs[0])


@register("leaky_relu")
def leaky_relu(inputs, attrs, params):
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@register("sigmoid")
def sigmoid(inputs, attrs, params):
    return torch.sigmoid(inputs[0])


@register("tanh")
def tanh(inputs, attrs, params):
    return torch.tanh(inputs[0])


@register("gelu")
def gelu(inputs, attrs, params):
    return F.gelu(inputs[0], approximate=attrs.get("approximate", "none"))


@register("silu")
def silu(inputs, attrs, params):
    return F.silu(inputs[0])


@register("elu")
def elu(inputs, attrs, params):
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


@register("softplus")
def softplus(inputs, attrs, params):
    return F.softplus(inputs[0])


@register("erf")
def erf(inputs, attrs, params):
    return torch.erf(inputs[0])


@register("hardswish")
def hardswish(inputs, attrs, params):
    x = inputs[0]
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@register("hardsigmoid")
def hardsigmoid(inputs, attrs, params):
    x = inputs[0]
    return torch.clamp(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0.0, 1.0)


@register("clip")
def clip(inputs, attrs, params):
    low, high = attrs.get("min"), attrs.get("max")
    return inputs[0] if low is None and high is None else torch.clamp(inputs[0], low, high)


# ---------------------------------------------------------------- routing


@register("reshape")
def reshape(inputs, attrs, params):
    return inputs[0].reshape(attrs["shape"])


@register("permute")
def permute(inputs, attrs, params):
    return inputs[0].permute(attrs["perm"])


@register("concat")
def concat(inputs, attrs, params):
    return torch.cat(inputs, dim=attrs["axis"])


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


# ---------------------------------------------------------------- arithmetic


@register("add")
def add(inputs, attrs, params):
    coeffs = attrs.get("coeffs") or [1.0] * len(inputs)
    out = inputs[0] * coeffs[0] if coeffs[0] != 1.0 else inputs[0]
    for c, x in zip(coeffs[1:], inputs[1:]):
        out = out + (x * c if c != 1.0 else x)
    return out


@register("add_const")
def add_const(inputs, attrs, params):
    return inputs[0] + params["const"]


@register("mul_const")
def mul_const(inputs, attrs, params):
    return inputs[0] * params["const"]


@register("mul")
def mul(inputs, attrs, params):
    return inputs[0] * inputs[1]


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


@register("lrn")
def lrn(inputs, attrs, params):
    """ONNX LRN: x / (bias + alpha/size * sum of squares over a channel window)^beta."""
    x = inputs[0]
    size = attrs["size"]
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = F.pad(x * x, [0, 0] * (x.dim() - 2) + [front, back])
    window = sum(sq.narrow(1, k, x.shape[1]) for k in range(size))
    return x / (attrs["bias"] + attrs["alpha"] / size * window) ** attrs["beta"]


def run_op(op: str, inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> Tensor:
    """Run one IR op; an op with no forward is an error naming it."""
    fn = OPS.get(op)
    if fn is None:
        raise UnsupportedOpError(f"IR op {op!r} has no forward implementation")
    return fn(inputs, attrs, params)
