"""ONNX converters for the linear-type ops (Conv, ConvTranspose, Gemm, MatMul, BatchNormalization) and pooling."""

from __future__ import annotations

import math

import numpy as np
import onnx

from .context import Context, converter, norm_axis

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
    weight = ctx.const(b)  # the file's precision, shared (a transposed view with transB=0)
    weight = weight if ctx.attr(node, "transB", 0) else weight.T
    if alpha != 1.0:  # a computed weight: in float64, like every constant lrpaudit derives
        weight = alpha * weight.astype(np.float64)
    params = {"weight": weight}
    c = ctx.optional_const(node, 2)
    out_features = weight.shape[0]
    if c is not None:
        c = c if beta == 1.0 else beta * c.astype(np.float64)
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
    if any(out for out in node.output[1:]):  # declared statistics outputs mean training mode (opset < 14)
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


# ---------------------------------------------------------------- pooling


@converter("MaxPool")
def maxpool(ctx: Context, node: onnx.NodeProto) -> None:
    if any(ctx.used(out) for out in node.output[1:]):
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
    axes = sorted(norm_axis(int(a), rank) for a in axes)
    keepdims = bool(ctx.attr(node, "keepdims", 1))
    if axes == list(range(2, rank)) and rank > 2:
        ctx.emit("global_avgpool", [node.input[0]], node.output[0], {"keepdims": keepdims})
    else:
        ctx.emit("mean", [node.input[0]], node.output[0], {"axes": tuple(axes), "keepdims": keepdims})
