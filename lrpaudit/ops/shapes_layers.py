"""Output shapes (see :mod:`.shapes`) of the linear-type ops, the pools and reductions, the products of two
activations and the normalizations, with the ONNX padding semantics of :mod:`.layers`."""

from __future__ import annotations

import math
import re

from ..errors import UnsupportedOpError
from .shapes import ShapeError, axis_of, broadcast, shape_of


def _window_input(x, dims: int, what: str) -> None:
    if dims not in (1, 2, 3) or len(x) != dims + 2:
        raise ShapeError(f"a {dims}-d {what} needs an input of rank {dims + 2}, got {list(x)}")


def _window_sizes(x, window, stride, pads, ceil_mode: bool = False) -> tuple[int, ...]:
    """Output sizes of a sliding window (``window``: its dilated extent) over the spatial axes of ``x``, ONNX
    pads ``[b1..bn, e1..en]``; with ``ceil_mode`` the last window must start inside the input or its begin
    padding (ONNX and torch)."""
    n = len(window)
    out = []
    for k in range(n):
        size, begin, end = x[2 + k], pads[k], pads[k + n]
        padded = size + begin + end
        if padded < window[k]:
            raise ShapeError(
                f"a window of {window[k]} does not fit axis {2 + k} of {list(x)} padded by {pads}"
            )
        steps = -(-(padded - window[k]) // stride[k]) if ceil_mode else (padded - window[k]) // stride[k]
        count = steps + 1
        if ceil_mode and (count - 1) * stride[k] >= size + begin:
            count -= 1
        out.append(count)
    return tuple(out)


# ---------------------------------------------------------------- linear-type ops


@shape_of("linear")
def linear(inputs, attrs, params):
    x, weight = inputs[0], params["weight"]
    if len(weight) != 2 or not x or x[-1] != weight[1]:
        raise ShapeError(f"a linear map with weight {list(weight)} cannot take an input of shape {list(x)}")
    return (*x[:-1], weight[0])


@shape_of("conv")
def conv(inputs, attrs, params):
    x, weight, groups = inputs[0], params["weight"], attrs["groups"]
    dims = len(weight) - 2
    _window_input(x, dims, "convolution")
    if x[1] != weight[1] * groups or weight[0] % groups:
        raise ShapeError(
            f"a convolution with weight {list(weight)} and {groups} groups cannot take {x[1]} input channels"
        )
    window = [d * (k - 1) + 1 for k, d in zip(weight[2:], attrs["dilation"])]
    return (x[0], weight[0], *_window_sizes(x, window, attrs["stride"], attrs["pads"]))


@shape_of("conv_transpose")
def conv_transpose(inputs, attrs, params):
    """ONNX ConvTranspose: ``(in - 1) * stride - pad_begin - pad_end + dilation * (k - 1) + output_padding + 1``."""
    x, weight, groups = inputs[0], params["weight"], attrs["groups"]
    dims = len(weight) - 2
    _window_input(x, dims, "transposed convolution")
    if x[1] != weight[0] or weight[0] % groups:
        raise ShapeError(
            f"a transposed convolution with weight {list(weight)} and {groups} groups cannot take {x[1]} input "
            "channels"
        )
    stride, dilation, pads, extra = attrs["stride"], attrs["dilation"], attrs["pads"], attrs["output_padding"]
    sizes = []
    for k in range(dims):
        size = (x[2 + k] - 1) * stride[k] - pads[k] - pads[k + dims] + dilation[k] * (weight[2 + k] - 1)
        sizes.append(size + extra[k] + 1)
    if min(sizes) < 1:
        raise ShapeError(f"a transposed convolution of {list(x)} padded by {list(pads)} has no output")
    return (x[0], weight[1] * groups, *sizes)


@shape_of("affine")
def affine(inputs, attrs, params):
    x = inputs[0]
    if len(x) < 2:
        raise ShapeError(f"a per-channel scale needs channels on axis 1, got {list(x)}")
    for key in ("weight", "bias"):
        if key in params and math.prod(params[key]) not in (1, x[1]):
            raise ShapeError(f"its {key} of shape {list(params[key])} does not fit {x[1]} channels")
    return x


# ---------------------------------------------------------------- pools and reductions


@shape_of("avgpool")
def avgpool(inputs, attrs, params):
    if attrs.get("ceil_mode") and attrs.get("count_include_pad"):
        raise UnsupportedOpError("AveragePool with ceil_mode=1 and count_include_pad=1 is not supported")
    x, kernel = inputs[0], attrs["kernel"]
    _window_input(x, len(kernel), "pool")
    return (*x[:2], *_window_sizes(x, kernel, attrs["stride"], attrs["pads"], attrs.get("ceil_mode", False)))


@shape_of("maxpool")
def maxpool(inputs, attrs, params):
    x, kernel = inputs[0], attrs["kernel"]
    _window_input(x, len(kernel), "pool")
    window = [d * (k - 1) + 1 for k, d in zip(kernel, attrs["dilation"])]
    return (*x[:2], *_window_sizes(x, window, attrs["stride"], attrs["pads"], attrs.get("ceil_mode", False)))


def _reduced(x, axes, keepdims: bool) -> tuple[int, ...]:
    """The shape after a mean over ``axes`` (none: all of them, as torch's ``mean(dim=())``)."""
    axes = {axis_of(a, len(x)) for a in axes} if axes else set(range(len(x)))
    if keepdims:
        return tuple(1 if k in axes else d for k, d in enumerate(x))
    return tuple(d for k, d in enumerate(x) if k not in axes)


@shape_of("global_avgpool")
def global_avgpool(inputs, attrs, params):
    x = inputs[0]
    if len(x) < 3:
        raise ShapeError(f"a global pool needs spatial axes after axis 1, got {list(x)}")
    return _reduced(x, range(2, len(x)), attrs.get("keepdims", True))


@shape_of("mean")
def mean(inputs, attrs, params):
    return _reduced(inputs[0], attrs["axes"], attrs.get("keepdims", True))


# ---------------------------------------------------------------- products of two activations, norms


@shape_of("matmul")
def matmul(inputs, attrs, params):
    """torch ``matmul``: 1-D operands gain and lose an axis; leading axes broadcast."""
    a, b = inputs
    if not a or not b:
        raise ShapeError(f"matmul of {list(a)} and {list(b)}: both need an axis")
    left, right = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
    if left[-1] != right[-2]:
        raise ShapeError(f"matmul of {list(a)} and {list(b)}: inner sizes {left[-1]} and {right[-2]} differ")
    out = (*broadcast(left[:-2], right[:-2]), left[-2], right[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) > 1 else out[:-1]
    return out


_TERM = re.compile(r"\.\.\.|[A-Za-z]")


@shape_of("einsum")
def einsum(inputs, attrs, params):
    """torch ``einsum``: a size per subscript (size-1 axes broadcast), ``...`` the broadcast leading axes; without
    ``->`` the output is ``...`` then the subscripts used once, sorted."""
    equation = attrs["equation"].replace(" ", "")
    given, arrow, output = equation.partition("->")
    terms = [_TERM.findall(term) for term in given.split(",")]
    if len(terms) != len(inputs) or any("".join(t) != term for t, term in zip(terms, given.split(","))):
        raise ShapeError(f"einsum {equation!r} does not fit {len(inputs)} operands")
    sizes: dict[str, int] = {}
    ellipses = []
    for term, shape in zip(terms, inputs):
        extra = len(shape) - (len(term) - term.count("..."))
        if extra < 0 or (extra and "..." not in term):
            raise ShapeError(f"einsum term {''.join(term)!r} does not fit an operand of shape {list(shape)}")
        position = 0
        for symbol in term:
            width = extra if symbol == "..." else 1
            axes, position = shape[position : position + width], position + width
            if symbol == "...":
                ellipses.append(axes)
            elif sizes.get(symbol, 1) == 1:
                sizes[symbol] = axes[0]
            elif axes[0] not in (1, sizes[symbol]):
                raise ShapeError(
                    f"einsum {equation!r}: subscript {symbol!r} has sizes {sizes[symbol]} and {axes[0]}"
                )
    leading = broadcast(*ellipses) if ellipses else ()
    if not arrow:
        letters = [s for t in terms for s in t if s != "..."]
        output = "..." * bool(ellipses) + "".join(sorted(s for s in set(letters) if letters.count(s) == 1))
    out: list[int] = []
    for symbol in _TERM.findall(output):
        if symbol == "...":
            out += leading
        elif symbol not in sizes:
            raise ShapeError(f"einsum {equation!r}: output subscript {symbol!r} is in no operand")
        else:
            out.append(sizes[symbol])
    return tuple(out)


@shape_of("layernorm")
def layernorm(inputs, attrs, params):
    x = inputs[0]
    for axis in attrs["axes"]:
        axis_of(axis, len(x))
    return broadcast(x, *(params[k] for k in ("weight", "bias") if k in params))


@shape_of("groupnorm")
def groupnorm(inputs, attrs, params):
    x, groups = inputs[0], attrs["groups"]
    if len(x) < 2 or groups < 1 or math.prod(x[1:]) % groups:
        raise ShapeError(f"{groups} groups do not divide the channels of {list(x)}")
    per_channel = [(1, math.prod(params[k]), *(1,) * (len(x) - 2)) for k in ("weight", "bias") if k in params]
    return broadcast(x, *per_channel)
