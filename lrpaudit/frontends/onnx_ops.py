"""One converter per ONNX op type: ONNX node (with at least one activation input) -> IR node(s).

Opset differences (attributes that became inputs, changed defaults) are resolved here, so the IR never sees them.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from .onnx_convert import Context, converter


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _acts(ctx: Context, node: onnx.NodeProto) -> list[str]:
    return [name for name in node.input if name and not ctx.is_const(name)]


# ---------------------------------------------------------------- removed ops


@converter("Identity", "Dropout")
def identity(ctx: Context, node: onnx.NodeProto) -> None:
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
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


# ---------------------------------------------------------------- linear-type


def _auto_pads(auto_pad: str, in_sizes, kernel, stride, dilation) -> list[int]:
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, stride, dilation):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _window_attrs(ctx: Context, node: onnx.NodeProto, kernel: list[int]) -> dict:
    dims = len(kernel)
    stride = list(ctx.attr(node, "strides", [1] * dims))
    dilation = list(ctx.attr(node, "dilations", [1] * dims))
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _auto_pads(auto_pad, ctx.shape(node.input[0])[2:], kernel, stride, dilation)
    else:
        pads = list(ctx.attr(node, "pads", [0] * (2 * dims)))
    return {
        "kernel": tuple(kernel),
        "stride": tuple(stride),
        "dilation": tuple(dilation),
        "pads": tuple(pads),
    }


@converter("Conv")
def conv(ctx: Context, node: onnx.NodeProto) -> None:
    if not ctx.is_const(node.input[1]):
        ctx.fail("Conv with a weight that depends on the model input is not supported")
    weight = ctx.const(node.input[1])
    bias = ctx.optional_const(node, 2)
    attrs = _window_attrs(ctx, node, list(weight.shape[2:]))
    attrs["groups"] = int(ctx.attr(node, "group", 1))
    params = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    ctx.emit("conv", [node.input[0]], node.output[0], attrs, params)


@converter("ConvTranspose")
def conv_transpose(ctx: Context, node: onnx.NodeProto) -> None:
    if not ctx.is_const(node.input[1]):
        ctx.fail("ConvTranspose with a weight that depends on the model input is not supported")
    weight = ctx.const(node.input[1])
    bias = ctx.optional_const(node, 2)
    dims = weight.ndim - 2
    kernel = list(ctx.attr(node, "kernel_shape", weight.shape[2:]))
    stride = list(ctx.attr(node, "strides", [1] * dims))
    dilation = list(ctx.attr(node, "dilations", [1] * dims))
    out_pad = list(ctx.attr(node, "output_padding", [0] * dims))
    in_sizes = ctx.shape(node.input[0])[2:]
    output_shape = ctx.attr(node, "output_shape", None)
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [s * st for s, st in zip(in_sizes, stride)]
    if output_shape is not None:
        output_shape = list(output_shape)[-dims:]
        begins, ends = [], []
        for i in range(dims):
            total = (
                stride[i] * (in_sizes[i] - 1)
                + out_pad[i]
                + (kernel[i] - 1) * dilation[i]
                + 1
                - output_shape[i]
            )
            if auto_pad == "SAME_UPPER":
                begins.append(total // 2)
                ends.append(total - total // 2)
            else:
                begins.append(total - total // 2)
                ends.append(total // 2)
        pads = begins + ends
    else:
        pads = list(ctx.attr(node, "pads", [0] * (2 * dims)))
    attrs = {
        "stride": tuple(stride),
        "dilation": tuple(dilation),
        "pads": tuple(pads),
        "output_padding": tuple(out_pad),
        "groups": int(ctx.attr(node, "group", 1)),
    }
    params = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    ctx.emit("conv_transpose", [node.input[0]], node.output[0], attrs, params)


@converter("Gemm")
def gemm(ctx: Context, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    if ctx.is_const(a) or not ctx.is_const(b):
        ctx.fail("Gemm is supported only as activation x constant weight")
    alpha, beta = float(ctx.attr(node, "alpha", 1.0)), float(ctx.attr(node, "beta", 1.0))
    x = a
    if ctx.attr(node, "transA", 0):
        x = ctx.emit("permute", [a], ctx.tmp(node.output[0], "transA"), {"perm": (1, 0)})
    weight = ctx.const(b).astype(np.float64)
    weight = alpha * (weight if ctx.attr(node, "transB", 0) else weight.T)
    params = {"weight": weight}
    c = ctx.optional_const(node, 2)
    out_features = weight.shape[0]
    if c is not None:
        c = beta * c.astype(np.float64)
        if c.size in (1, out_features) and (c.ndim <= 1 or c.shape[0] == 1):
            params["bias"] = np.broadcast_to(c.reshape(-1), (out_features,)).copy()
        else:
            linear_out = ctx.emit("linear", [x], ctx.tmp(node.output[0], "mm"), {}, params)
            ctx.emit("add_const", [linear_out], node.output[0], {}, {"const": c})
            return
    ctx.emit("linear", [x], node.output[0], {}, params)


@converter("MatMul")
def matmul(ctx: Context, node: onnx.NodeProto) -> None:
    a, b = node.input
    if not ctx.is_const(a) and ctx.is_const(b) and ctx.const(b).ndim == 2:
        ctx.emit("linear", [a], node.output[0], {}, {"weight": ctx.const(b).T})
    elif not ctx.is_const(a) and not ctx.is_const(b):
        ctx.emit("matmul", [a, b], node.output[0])
    else:
        ctx.fail("MatMul is supported as activation x 2-D constant (linear) or activation x activation")


@converter("BatchNormalization")
def batch_norm(ctx: Context, node: onnx.NodeProto) -> None:
    if ctx.attr(node, "training_mode", 0):
        ctx.fail("BatchNormalization in training mode is not supported (export the model in eval mode)")
    if any(out for out in node.output[1:]):
        ctx.fail("BatchNormalization with running-statistics outputs (training mode) is not supported")
    if not ctx.attr(node, "spatial", 1):
        ctx.fail("BatchNormalization with spatial=0 is not supported")
    if not all(ctx.is_const(name) for name in node.input[1:5]):
        ctx.fail("BatchNormalization statistics must be constant")
    gamma, beta, mean, var = (ctx.const(name).astype(np.float64) for name in node.input[1:5])
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    if not np.all(var + eps >= 0):
        ctx.fail(
            "BatchNormalization has a negative or NaN variance + epsilon (a broken model: its output is NaN)"
        )
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    ctx.emit(
        "affine", [node.input[0]], node.output[0], {"source": "batchnorm"}, {"weight": scale, "bias": shift}
    )


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
    axis = _norm_axis(int(ctx.attr(node, "axis", 1 if legacy else -1)), rank)
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    ctx.emit(op, [node.input[0]], node.output[0], {"axis": axis, "coerce_2d": legacy and axis != rank - 1})


# ---------------------------------------------------------------- pooling


@converter("MaxPool")
def maxpool(ctx: Context, node: onnx.NodeProto) -> None:
    if len(node.output) > 1 and node.output[1]:
        ctx.fail("MaxPool with an Indices output is not supported")
    attrs = _window_attrs(ctx, node, list(ctx.attr(node, "kernel_shape")))
    attrs["ceil_mode"] = bool(ctx.attr(node, "ceil_mode", 0))
    ctx.emit("maxpool", [node.input[0]], node.output[0], attrs)


@converter("AveragePool")
def avgpool(ctx: Context, node: onnx.NodeProto) -> None:
    attrs = _window_attrs(ctx, node, list(ctx.attr(node, "kernel_shape")))
    if any(d != 1 for d in attrs.pop("dilation")):
        ctx.fail("AveragePool with dilations is not supported")
    attrs["ceil_mode"] = bool(ctx.attr(node, "ceil_mode", 0))
    attrs["count_include_pad"] = bool(ctx.attr(node, "count_include_pad", 0))
    ctx.emit("avgpool", [node.input[0]], node.output[0], attrs)


@converter("GlobalAveragePool")
def global_avgpool(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.emit("global_avgpool", [node.input[0]], node.output[0], {"keepdims": True})


@converter("GlobalMaxPool")
def global_maxpool(ctx: Context, node: onnx.NodeProto) -> None:
    spatial = ctx.shape(node.input[0])[2:]
    dims = len(spatial)
    attrs = {
        "kernel": tuple(spatial),
        "stride": (1,) * dims,
        "dilation": (1,) * dims,
        "pads": (0,) * (2 * dims),
    }
    ctx.emit("maxpool", [node.input[0]], node.output[0], attrs)


@converter("ReduceMean")
def reduce_mean(ctx: Context, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    if ctx.opset >= 18:
        axes_c = ctx.optional_const(node, 1)
        axes = None if axes_c is None else [int(a) for a in np.ravel(axes_c)]
    else:
        axes = ctx.attr(node, "axes", None)
    if not axes:
        if ctx.attr(node, "noop_with_empty_axes", 0):
            ctx.alias(node.output[0], node.input[0])
            return
        axes = list(range(rank))
    axes = sorted(_norm_axis(int(a), rank) for a in axes)
    keepdims = bool(ctx.attr(node, "keepdims", 1))
    if 0 in axes:
        ctx.fail("ReduceMean over the batch axis mixes samples; not supported")
    if axes == list(range(2, rank)) and rank > 2:
        ctx.emit("global_avgpool", [node.input[0]], node.output[0], {"keepdims": keepdims})
    else:
        ctx.emit("mean", [node.input[0]], node.output[0], {"axes": tuple(axes), "keepdims": keepdims})


# ---------------------------------------------------------------- shape / routing


def _reshape_to(ctx: Context, node: onnx.NodeProto, shape: tuple[int, ...]) -> None:
    ctx.emit("reshape", [node.input[0]], node.output[0], {"shape": tuple(int(s) for s in shape)})


@converter("Flatten")
def flatten(ctx: Context, node: onnx.NodeProto) -> None:
    shape = ctx.shape(node.input[0])
    axis = _norm_axis(int(ctx.attr(node, "axis", 1)), len(shape))
    _reshape_to(ctx, node, (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))


@converter("Reshape")
def reshape(ctx: Context, node: onnx.NodeProto) -> None:
    shape_in = ctx.shape(node.input[0])
    target = [int(s) for s in np.ravel(ctx.optional_const(node, 1))]
    if not ctx.attr(node, "allowzero", 0):
        target = [shape_in[i] if s == 0 else s for i, s in enumerate(target)]
    _reshape_to(ctx, node, tuple(np.empty(shape_in, dtype=np.bool_).reshape(target).shape))


def _axes(ctx: Context, node: onnx.NodeProto) -> list[int] | None:
    if ctx.opset >= 13:
        axes = ctx.optional_const(node, 1)
        return None if axes is None else [int(a) for a in np.ravel(axes)]
    return ctx.attr(node, "axes", None)


@converter("Squeeze")
def squeeze(ctx: Context, node: onnx.NodeProto) -> None:
    shape = ctx.shape(node.input[0])
    axes = _axes(ctx, node)
    axes = (
        [i for i, s in enumerate(shape) if s == 1]
        if axes is None
        else [_norm_axis(a, len(shape)) for a in axes]
    )
    _reshape_to(ctx, node, tuple(s for i, s in enumerate(shape) if i not in axes))


@converter("Unsqueeze")
def unsqueeze(ctx: Context, node: onnx.NodeProto) -> None:
    shape = list(ctx.shape(node.input[0]))
    axes = _axes(ctx, node) or []
    rank = len(shape) + len(axes)
    for axis in sorted(_norm_axis(a, rank) for a in axes):
        shape.insert(axis, 1)
    _reshape_to(ctx, node, tuple(shape))


@converter("Transpose")
def transpose(ctx: Context, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    perm = ctx.attr(node, "perm", None) or list(reversed(range(rank)))
    ctx.emit("permute", [node.input[0]], node.output[0], {"perm": tuple(int(p) for p in perm)})


@converter("Concat")
def concat(ctx: Context, node: onnx.NodeProto) -> None:
    if any(ctx.is_const(name) for name in node.input):
        ctx.fail("Concat of an activation with a constant is not supported")
    rank = len(ctx.shape(node.input[0]))
    axis = _norm_axis(int(ctx.attr(node, "axis")), rank)
    if axis == 0:
        ctx.fail("Concat along the batch axis mixes samples; not supported")
    ctx.emit("concat", list(node.input), node.output[0], {"axis": axis})


@converter("Slice")
def slice_(ctx: Context, node: onnx.NodeProto) -> None:
    shape = ctx.shape(node.input[0])
    if ctx.opset < 10:
        starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
        axes, steps = ctx.attr(node, "axes", None), None
    else:
        starts, ends = ctx.optional_const(node, 1), ctx.optional_const(node, 2)
        axes, steps = ctx.optional_const(node, 3), ctx.optional_const(node, 4)
    starts, ends = [int(s) for s in np.ravel(starts)], [int(e) for e in np.ravel(ends)]
    axes = (
        list(range(len(starts))) if axes is None else [_norm_axis(int(a), len(shape)) for a in np.ravel(axes)]
    )
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.ravel(steps)]
    picks = [
        (a, tuple(range(*slice(s, e, st).indices(shape[a]))))
        for s, e, st, a in zip(starts, ends, steps, axes)
    ]
    picks = [(a, index) for a, index in picks if index != tuple(range(shape[a]))]  # whole axes are no-ops
    if not picks:
        ctx.alias(node.output[0], node.input[0])
        return
    if any(a == 0 for a, _ in picks):
        ctx.fail("Slice along the batch axis is not supported")
    axes_kept, indices = zip(*picks)
    ctx.emit("slice", [node.input[0]], node.output[0], {"axes": tuple(axes_kept), "indices": tuple(indices)})


@converter("Split")
def split(ctx: Context, node: onnx.NodeProto) -> None:
    """One ``slice`` per output; sizes from the ``split`` attribute (< 13) or input (13+), else equal parts."""
    shape = ctx.shape(node.input[0])
    axis = _norm_axis(int(ctx.attr(node, "axis", 0)), len(shape))
    if axis == 0:
        ctx.fail("Split along the batch axis is not supported")
    sizes = ctx.optional_const(node, 1) if ctx.opset >= 13 else ctx.attr(node, "split", None)
    if sizes is None:  # equal parts; from opset 18 the last one may be smaller
        chunk = -(-shape[axis] // len(node.output))
        sizes = [min(chunk, shape[axis] - k * chunk) for k in range(len(node.output))]
    start = 0
    for output, size in zip(node.output, (int(s) for s in np.ravel(sizes))):
        if output:
            index = (tuple(range(start, start + size)),)
            ctx.emit("slice", [node.input[0]], output, {"axes": (axis,), "indices": index})
        start += size


@converter("Gather")
def gather(ctx: Context, node: onnx.NodeProto) -> None:
    if ctx.is_const(node.input[0]) or not ctx.is_const(node.input[1]):
        ctx.fail("Gather is supported only with constant indices into an activation")
    shape = ctx.shape(node.input[0])
    axis = _norm_axis(int(ctx.attr(node, "axis", 0)), len(shape))
    if axis == 0:
        ctx.fail("Gather along the batch axis is not supported")
    indices = np.asarray(ctx.const(node.input[1]), dtype=np.int64)
    indices = np.where(indices < 0, indices + shape[axis], indices)
    ctx.emit("gather", [node.input[0]], node.output[0], {"axis": axis, "indices": indices.tolist()})


@converter("Pad")
def pad(ctx: Context, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    mode = ctx.attr(node, "mode", "constant")
    if ctx.opset < 11:
        pads, value = list(ctx.attr(node, "pads")), float(ctx.attr(node, "value", 0.0))
    else:
        pads = [int(p) for p in np.ravel(ctx.optional_const(node, 1))]
        value_c = ctx.optional_const(node, 2)
        value = 0.0 if value_c is None or value_c.size == 0 else float(np.ravel(value_c)[0])
        axes_c = ctx.optional_const(node, 3)
        if axes_c is not None:
            axes = [_norm_axis(int(a), rank) for a in np.ravel(axes_c)]
            full = [0] * (2 * rank)
            for k, axis in enumerate(axes):
                full[axis], full[axis + rank] = pads[k], pads[k + len(axes)]
            pads = full
    if pads[0] or pads[rank]:
        ctx.fail("Pad along the batch axis is not supported")
    if mode not in ("constant", "reflect", "edge"):
        ctx.fail(f"Pad mode {mode!r} is not supported")
    ctx.emit(
        "pad",
        [node.input[0]],
        node.output[0],
        {"pads": tuple(int(p) for p in pads), "mode": mode, "value": value},
    )


# ---------------------------------------------------------------- arithmetic


def _operand(ctx: Context, node: onnx.NodeProto, name: str) -> np.ndarray:
    """A constant operand, aligned for the pre-opset-7 ``broadcast``/``axis`` attributes.

    Before opset 7, ``broadcast=1`` lines B up with A starting at ``axis`` (default: trailing, as numpy does).
    """
    value = ctx.const(name)
    if ctx.opset >= 7 or not ctx.attr(node, "broadcast", 0) or name != node.input[1]:
        return value
    rank = len(ctx.shape(node.input[0]))
    axis = _norm_axis(int(ctx.attr(node, "axis", rank - value.ndim)), rank)
    return value.reshape(value.shape + (1,) * (rank - axis - value.ndim))


def _check_legacy_broadcast(ctx: Context, node: onnx.NodeProto) -> None:
    """Two activations under pre-opset-7 broadcasting must line up as numpy would (trailing axes)."""
    if ctx.opset >= 7 or not ctx.attr(node, "broadcast", 0) or ctx.is_const(node.input[1]):
        return
    rank, b_rank = len(ctx.shape(node.input[0])), len(ctx.shape(node.input[1]))
    if _norm_axis(int(ctx.attr(node, "axis", rank - b_rank)), rank) != rank - b_rank:
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
    a, b = node.input
    if not ctx.is_const(b):
        ctx.fail("Div by an activation is not supported")
    ctx.emit("mul_const", [a], node.output[0], {}, {"const": 1.0 / _operand(ctx, node, b).astype(np.float64)})
