"""One converter per ONNX op type: ONNX node (with at least one activation input) -> IR node(s).

Opset differences (attributes that became inputs, changed defaults) are resolved here, so the IR never sees them.
This module holds the removed ops, the elementwise activations and the arithmetic; the linear-type and pooling
converters are in ``ops_layers``, the shape and routing ones in ``ops_shape``.
"""

from __future__ import annotations

import numpy as np
import onnx

from .context import Context, converter, norm_axis


def _acts(ctx: Context, node: onnx.NodeProto) -> list[str]:
    return [name for name in node.input if name and not ctx.is_const(name)]


# ---------------------------------------------------------------- removed ops


@converter("Identity", "Dropout")
def identity(ctx: Context, node: onnx.NodeProto) -> None:
    if node.op_type == "Dropout" and any(ctx.used(out) for out in node.output[1:]):
        ctx.fail("the Dropout mask output is used; only inference-mode Dropout is supported")
    ctx.alias(node.output[0], node.input[0])


@converter("Cast", "CastLike")
def cast(ctx: Context, node: onnx.NodeProto) -> None:
    target = ctx.attr(node, "to")
    if node.op_type == "CastLike" and not ctx.is_const(node.input[1]):
        if ctx.is_const(node.input[0]):  # a constant cast to an activation's (floating) type: fold it
            ctx.consts[node.output[0]] = ctx.const(node.input[0]).astype(ctx.float_dtype)
            return
        target = onnx.helper.np_dtype_to_tensor_dtype(ctx.float_dtype)
    elif node.op_type == "CastLike":
        target = onnx.helper.np_dtype_to_tensor_dtype(ctx.const(node.input[1]).dtype)
    if target not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        ctx.fail("Cast of an activation to a non-floating type cuts the relevance path")
    ctx.alias(node.output[0], node.input[0])


@converter("Shape", "Size")
def shape_of(ctx: Context, node: onnx.NodeProto) -> None:
    shape = np.array(ctx.shape(node.input[0]), dtype=np.int64)
    if node.op_type == "Size":
        ctx.consts[node.output[0]] = np.array(int(np.prod(shape)), dtype=np.int64)
        return
    start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end", None)
    ctx.consts[node.output[0]] = shape[start:end]


# ---------------------------------------------------------------- activations


def _simple(op: str, **defaults):
    def convert(ctx: Context, node: onnx.NodeProto) -> None:
        attrs = {key: ctx.attr(node, key, value) for key, value in defaults.items()}
        ctx.emit(op, [node.input[0]], node.output[0], attrs)

    return convert


converter("Relu")(_simple("relu"))
converter("LeakyRelu")(_simple("leaky_relu", alpha=0.01))
converter("Sigmoid")(_simple("sigmoid"))
converter("Tanh")(_simple("tanh"))
converter("Elu")(_simple("elu", alpha=1.0))
converter("HardSwish")(_simple("hardswish"))
converter("HardSigmoid")(_simple("hardsigmoid", alpha=0.2, beta=0.5))
converter("Softplus")(_simple("softplus"))
converter("Erf")(_simple("erf"))
converter("Gelu")(_simple("gelu", approximate="none"))
converter("LRN")(_simple("lrn", size=None, alpha=1e-4, beta=0.75, bias=1.0))


@converter("Clip")
def clip(ctx: Context, node: onnx.NodeProto) -> None:
    if ctx.opset < 11:
        low, high = ctx.attr(node, "min", None), ctx.attr(node, "max", None)
    else:
        low_c, high_c = ctx.optional_const(node, 1), ctx.optional_const(node, 2)
        low = None if low_c is None else float(low_c)
        high = None if high_c is None else float(high_c)
    ctx.emit("clip", [node.input[0]], node.output[0], {"min": low, "max": high})


@converter("Softmax", "LogSoftmax")
def softmax(ctx: Context, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    legacy = ctx.opset < 13
    axis = norm_axis(int(ctx.attr(node, "axis", 1 if legacy else -1)), rank)
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    ctx.emit(op, [node.input[0]], node.output[0], {"axis": axis, "coerce_2d": legacy and axis != rank - 1})


# ---------------------------------------------------------------- arithmetic


def _operand(ctx: Context, node: onnx.NodeProto, name: str) -> np.ndarray:
    """A constant operand, aligned for the pre-opset-7 ``broadcast``/``axis`` attributes.

    Before opset 7, ``broadcast=1`` lines B up with A starting at ``axis`` (default: trailing, as numpy does).
    """
    value = ctx.const(name)
    if ctx.opset >= 7 or not ctx.attr(node, "broadcast", 0) or name != node.input[1]:
        return value
    rank = len(ctx.shape(node.input[0]))
    axis = norm_axis(int(ctx.attr(node, "axis", rank - value.ndim)), rank)
    return value.reshape(value.shape + (1,) * (rank - axis - value.ndim))


def _check_legacy_broadcast(ctx: Context, node: onnx.NodeProto) -> None:
    """Two activations under pre-opset-7 broadcasting must line up as numpy would (trailing axes)."""
    if ctx.opset >= 7 or not ctx.attr(node, "broadcast", 0) or ctx.is_const(node.input[1]):
        return
    rank, b_rank = len(ctx.shape(node.input[0])), len(ctx.shape(node.input[1]))
    if norm_axis(int(ctx.attr(node, "axis", rank - b_rank)), rank) != rank - b_rank:
        ctx.fail("legacy broadcasting of an activation along a non-trailing axis is not supported")


@converter("Add", "Sum")
def add(ctx: Context, node: onnx.NodeProto) -> None:
    _check_legacy_broadcast(ctx, node)
    acts = _acts(ctx, node)
    consts = [_operand(ctx, node, name) for name in node.input if name and ctx.is_const(name)]
    out = node.output[0]
    if consts:
        total = sum(c.astype(np.float64) for c in consts)
        x = acts[0] if len(acts) == 1 else ctx.emit("add", acts, ctx.tmp(out, "sum"))
        ctx.emit("add_const", [x], out, {}, {"const": total})
    elif len(acts) == 1:
        ctx.alias(out, acts[0])
    else:
        ctx.emit("add", acts, out)


@converter("Sub")
def sub(ctx: Context, node: onnx.NodeProto) -> None:
    a, b = node.input
    out = node.output[0]
    _check_legacy_broadcast(ctx, node)
    if ctx.is_const(b):
        ctx.emit("add_const", [a], out, {}, {"const": -_operand(ctx, node, b).astype(np.float64)})
    elif ctx.is_const(a):
        negated = ctx.emit("mul_const", [b], ctx.tmp(out, "neg"), {}, {"const": np.array(-1.0)})
        ctx.emit("add_const", [negated], out, {}, {"const": ctx.const(a)})
    else:
        ctx.emit("add", [a, b], out, {"coeffs": [1.0, -1.0]})


@converter("Mul")
def mul(ctx: Context, node: onnx.NodeProto) -> None:
    a, b = node.input
    _check_legacy_broadcast(ctx, node)
    if ctx.is_const(a) or ctx.is_const(b):
        x, c = (b, a) if ctx.is_const(a) else (a, b)
        ctx.emit("mul_const", [x], node.output[0], {}, {"const": _operand(ctx, node, c)})
    else:
        ctx.emit("mul", [a, b], node.output[0])


@converter("Div")
def div(ctx: Context, node: onnx.NodeProto) -> None:
    """By a constant: ``mul_const``. By an activation: ``div`` (or ``reciprocal`` for ``c / x``), steps of a
    decomposed normalization that the passes fuse (``ir.FUSION_ONLY``)."""
    a, b = node.input
    out = node.output[0]
    _check_legacy_broadcast(ctx, node)
    if ctx.is_const(b):
        ctx.emit("mul_const", [a], out, {}, {"const": 1.0 / _operand(ctx, node, b).astype(np.float64)})
    elif not ctx.is_const(a):
        ctx.emit("div", [a, b], out)
    elif np.all(ctx.const(a) == 1):
        ctx.emit("reciprocal", [b], out)
    else:
        inverse = ctx.emit("reciprocal", [b], ctx.tmp(out, "reciprocal"))
        ctx.emit("mul_const", [inverse], out, {}, {"const": ctx.const(a).astype(np.float64)})


@converter("Pow")
def pow_(ctx: Context, node: onnx.NodeProto) -> None:
    """An activation to a constant scalar power (a variance's square, GELU-tanh's cube): fused by the passes."""
    exponent = ctx.optional_const(node, 1)
    if ctx.is_const(node.input[0]) or exponent is None or exponent.size != 1:
        ctx.fail("Pow is supported as an activation to a constant scalar power")
    ctx.emit("pow", [node.input[0]], node.output[0], {"exponent": float(np.ravel(exponent)[0])})


converter("Sqrt")(_simple("sqrt"))
converter("Reciprocal")(_simple("reciprocal"))
