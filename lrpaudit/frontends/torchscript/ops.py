"""One converter per aten op: an aten call with at least one activation input -> IR node(s).

Each converter reads the call's arguments by schema name (activations as ``Act``, everything else as concrete
values) and emits IR through ``ctx.emit``; the emitted op is checked against the real aten result there. In-place
variants (``relu_``, ``add_``) reach the converter of their functional op. A converter raises ``Refuse`` for a
case it cannot represent; the interpreter turns that into an UnsupportedOpError naming op, module and file.
Linear-type, activation, pooling and arithmetic converters live here; shape and routing ones in
``ops_shape``.
"""

from __future__ import annotations

from typing import Any

import torch

from .._tokens import token_misuse
from ._helpers import check_batched, dims_from_kind, f64, int_tuple, norm_dim, scalar, self_act
from .builder import Builder
from .values import Act, Call, Poison, Refuse, Tokens, converter, has_act

Tensor = torch.Tensor

# ---------------------------------------------------------------- linear-type


@converter(
    "aten::_convolution",
    "aten::_convolution_mode",
    "aten::convolution",
    "aten::conv1d",
    "aten::conv2d",
    "aten::conv3d",
    "aten::conv_transpose1d",
    "aten::conv_transpose2d",
    "aten::conv_transpose3d",
)
def convolution(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    weight, bias = call.const("weight"), call.const("bias")
    dims = weight.dim() - 2
    check_batched(x, dims, "convolution")
    transposed = "transpose" in call.kind or bool(call.arg("transposed", False))
    stride = int_tuple(call.arg("stride", 1), dims)
    dilation = int_tuple(call.arg("dilation", 1), dims)
    padding = call.arg("padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0,) * (2 * dims)
        elif padding == "same" and not transposed:
            totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
            pads = tuple(t // 2 for t in totals) + tuple(t - t // 2 for t in totals)
        else:
            raise Refuse(f"padding={padding!r} is not supported")
    else:
        pads = int_tuple(padding, dims) * 2
    attrs: dict[str, Any] = {
        "stride": stride,
        "dilation": dilation,
        "pads": pads,
        "groups": int(call.arg("groups", 1)),
    }
    if transposed:
        attrs["output_padding"] = int_tuple(call.arg("output_padding", 0), dims)
    params = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    op = "conv_transpose" if transposed else "conv"
    return ctx.emit(op, [x], attrs, params, weight=call.qualnames.get("weight"))


@converter("aten::linear")
def linear(ctx: Builder, call: Call) -> Act:
    x = call.act("input")
    weight, bias = call.const("weight"), call.const("bias")
    if weight.dim() != 2:
        raise Refuse("linear weight must be 2-D")
    params = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    return ctx.emit("linear", [x], {}, params, weight=call.qualnames.get("weight"))


@converter("aten::addmm")
def addmm(ctx: Builder, call: Call) -> Act:
    x = call.act("mat1")
    mat2, bias = call.const("mat2"), call.const("self")
    beta, alpha = float(call.const("beta")), float(call.const("alpha"))
    weight = alpha * f64(mat2).T
    out_features = weight.shape[0]
    shift = beta * f64(bias)
    if shift.numel() in (1, out_features) and (shift.dim() <= 1 or shift.shape[0] == 1):
        params = {"weight": weight, "bias": shift.reshape(-1).expand(out_features).clone()}
        return ctx.emit("linear", [x], {}, params, weight=call.qualnames.get("mat2"))
    y = ctx.emit("linear", [x], {}, {"weight": weight}, tmp=True, weight=call.qualnames.get("mat2"))
    return ctx.emit("add_const", [y], {}, {"const": shift})


@converter("aten::matmul", "aten::mm", "aten::bmm")
def matmul(ctx: Builder, call: Call) -> Act:
    a, b = call.positional[:2]
    if isinstance(a, Act) and isinstance(b, Act):
        return ctx.emit("matmul", [a, b])
    if isinstance(a, Act) and isinstance(b, Tensor) and b.dim() == 2:
        return ctx.emit(
            "linear", [a], {}, {"weight": f64(b).T}, weight=call.qualnames.get(call.schema.arguments[1].name)
        )
    raise Refuse("matmul is supported as activation x 2-D constant (linear) or activation x activation")


@converter("aten::batch_norm")
def batch_norm(ctx: Builder, call: Call) -> Act:
    x = call.act("input")
    if call.const("training"):
        raise Refuse("BatchNorm in training mode (call model.eval() before tracing/scripting)")
    mean, var = call.const("running_mean"), call.const("running_var")
    if mean is None or var is None:
        raise Refuse("BatchNorm without running statistics normalizes with batch statistics; not supported")
    if x.value.dim() < 2 or x.value.shape[1] != mean.numel():
        raise Refuse("BatchNorm channel count does not match axis 1 of its input")
    gamma, beta = call.const("weight"), call.const("bias")
    gamma = torch.ones_like(f64(mean)) if gamma is None else f64(gamma)
    beta = torch.zeros_like(f64(mean)) if beta is None else f64(beta)
    scale = gamma / torch.sqrt(f64(var) + float(call.const("eps")))
    shift = beta - f64(mean) * scale
    owner = call.qualnames.get("running_mean") or call.qualnames.get("weight")
    return ctx.emit("affine", [x], {"source": "batchnorm"}, {"weight": scale, "bias": shift}, weight=owner)


# ---------------------------------------------------------------- activations


def _simple(op: str, **fixed: Any):
    def convert(ctx: Builder, call: Call) -> Act:
        return ctx.emit(op, [self_act(call)], dict(fixed))

    return convert


for _kind, _op in {
    "aten::relu": "relu",
    "aten::sigmoid": "sigmoid",
    "aten::tanh": "tanh",
    "aten::silu": "silu",
    "aten::hardswish": "hardswish",
    "aten::erf": "erf",
}.items():
    converter(_kind)(_simple(_op))
converter("aten::hardsigmoid")(_simple("hardsigmoid", alpha=1.0 / 6.0, beta=0.5))
converter("aten::relu6")(_simple("clip", min=0.0, max=6.0))


@converter("aten::gelu")
def gelu(ctx: Builder, call: Call) -> Act:
    return ctx.emit("gelu", [self_act(call)], {"approximate": call.const("approximate") or "none"})


@converter("aten::leaky_relu")
def leaky_relu(ctx: Builder, call: Call) -> Act:
    return ctx.emit("leaky_relu", [self_act(call)], {"alpha": float(call.const("negative_slope"))})


@converter("aten::elu")
def elu(ctx: Builder, call: Call) -> Act:
    if float(call.const("scale")) != 1.0 or float(call.const("input_scale")) != 1.0:
        raise Refuse("ELU with scale/input_scale (SELU, CELU) is not supported")
    return ctx.emit("elu", [self_act(call)], {"alpha": float(call.const("alpha"))})


@converter("aten::softplus")
def softplus(ctx: Builder, call: Call) -> Act:
    if float(call.const("beta")) != 1.0 or float(call.const("threshold")) != 20.0:
        raise Refuse("Softplus with beta != 1 or threshold != 20 is not supported")
    return ctx.emit("softplus", [self_act(call)])


@converter("aten::hardtanh", "aten::clamp", "aten::clamp_min", "aten::clamp_max")
def clip(ctx: Builder, call: Call) -> Act:
    names = [a.name for a in call.schema.arguments]
    if call.kind == "aten::hardtanh":
        low, high = call.const("min_val"), call.const("max_val")
    elif call.kind == "aten::clamp":
        low, high = call.const("min"), call.const("max")
    elif call.kind == "aten::clamp_min":
        low, high = call.const(names[1]), None
    else:
        low, high = None, call.const(names[1])
    return ctx.emit(
        "clip", [self_act(call)], {"min": scalar(low, "clamp bound"), "max": scalar(high, "clamp bound")}
    )


@converter("aten::prelu")
def prelu(ctx: Builder, call: Call) -> Act:
    weight = call.const("weight")
    if weight.numel() != 1:
        raise Refuse("PReLU with one slope per channel is not supported (one shared slope is)")
    return ctx.emit(
        "leaky_relu", [self_act(call)], {"alpha": float(weight)}, weight=call.qualnames.get("weight")
    )


@converter("aten::softmax", "aten::_softmax", "aten::log_softmax", "aten::_log_softmax")
def softmax(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    op = "log_softmax" if "log_softmax" in call.kind else "softmax"
    return ctx.emit(op, [x], {"axis": norm_dim(call.const("dim"), x.value.dim()), "coerce_2d": False})


# ---------------------------------------------------------------- pooling


def _pool_attrs(call: Call, x: Act, dims: int) -> dict[str, Any]:
    kernel = int_tuple(call.const("kernel_size"), dims)
    stride = call.const("stride")
    stride = kernel if stride is None or len(stride) == 0 else int_tuple(stride, dims)
    return {"kernel": kernel, "stride": stride, "pads": int_tuple(call.const("padding"), dims) * 2}


@converter(
    "aten::max_pool1d",
    "aten::max_pool2d",
    "aten::max_pool3d",
    "aten::max_pool1d_with_indices",
    "aten::max_pool2d_with_indices",
    "aten::max_pool3d_with_indices",
)
def max_pool(ctx: Builder, call: Call) -> Any:
    x = self_act(call)
    dims = dims_from_kind(call.kind)
    check_batched(x, dims, "max pooling")
    attrs = _pool_attrs(call, x, dims)
    attrs["dilation"] = int_tuple(call.const("dilation"), dims)
    attrs["ceil_mode"] = bool(call.const("ceil_mode"))
    if call.kind.endswith("_with_indices"):
        out = ctx.emit("maxpool", [x], attrs, value=call.out[0])
        return out, Poison("max-pooling indices (return_indices=True) are not supported")
    return ctx.emit("maxpool", [x], attrs)


@converter("aten::avg_pool1d", "aten::avg_pool2d", "aten::avg_pool3d")
def avg_pool(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    dims = dims_from_kind(call.kind)
    check_batched(x, dims, "average pooling")
    if call.arg("divisor_override") is not None:
        raise Refuse("average pooling with divisor_override is not supported")
    attrs = _pool_attrs(call, x, dims)
    attrs["ceil_mode"] = bool(call.const("ceil_mode"))
    attrs["count_include_pad"] = bool(call.const("count_include_pad")) and any(attrs["pads"])
    if attrs["ceil_mode"] and attrs["count_include_pad"]:
        raise Refuse(
            "average pooling with ceil_mode=True, padding and count_include_pad=True is not supported"
        )
    return ctx.emit("avgpool", [x], attrs)


@converter(
    "aten::adaptive_avg_pool1d",
    "aten::adaptive_avg_pool2d",
    "aten::adaptive_avg_pool3d",
    "aten::adaptive_max_pool1d",
    "aten::adaptive_max_pool2d",
    "aten::adaptive_max_pool3d",
)
def adaptive_pool(ctx: Builder, call: Call) -> Any:
    x = self_act(call)
    dims = dims_from_kind(call.kind)
    check_batched(x, dims, "adaptive pooling")
    spatial = tuple(x.value.shape[2:])
    size = int_tuple(call.const("output_size"), dims)
    size = tuple(s if o is None else int(o) for s, o in zip(spatial, size))
    is_max = "max" in call.kind
    if not is_max and all(o == 1 for o in size):
        return ctx.emit("global_avgpool", [x], {"keepdims": True})
    if any(o == 0 or s % o for s, o in zip(spatial, size)):
        raise Refuse(
            f"adaptive pooling from {list(spatial)} to {list(size)}: only divisible sizes are supported"
        )
    kernel = tuple(s // o for s, o in zip(spatial, size))
    attrs: dict[str, Any] = {
        "kernel": kernel,
        "stride": kernel,
        "pads": (0,) * (2 * dims),
        "ceil_mode": False,
    }
    if is_max:
        attrs["dilation"] = (1,) * dims
        out = ctx.emit("maxpool", [x], attrs, value=call.out[0])
        return out, Poison("adaptive max-pooling indices are not supported")
    attrs["count_include_pad"] = False
    return ctx.emit("avgpool", [x], attrs)


@converter("aten::mean")
def mean(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    rank = x.value.dim()
    dims = call.arg("dim")
    axes = sorted({norm_dim(d, rank) for d in dims}) if dims else list(range(rank))
    keepdim = bool(call.arg("keepdim", False))
    if rank > 2 and axes == list(range(2, rank)):
        return ctx.emit("global_avgpool", [x], {"keepdims": keepdim})
    return ctx.emit("mean", [x], {"axes": tuple(axes), "keepdims": keepdim})


# ---------------------------------------------------------------- arithmetic


@converter("aten::add", "aten::sub")
def add_sub(ctx: Builder, call: Call) -> Act:
    a, b = call.positional[:2]
    alpha = call.const("alpha") if "alpha" in call.args else 1
    coef = float(alpha) * (-1.0 if call.kind == "aten::sub" else 1.0)
    if isinstance(a, Act) and isinstance(b, Act):
        return ctx.emit("add", [a, b], {} if coef == 1.0 else {"coeffs": [1.0, coef]})
    if isinstance(a, Act):
        if has_act(b):
            raise Refuse("unsupported operand")
        return ctx.emit("add_const", [a], {}, {"const": coef * f64(b)})
    scaled = b if coef == 1.0 else ctx.emit("mul_const", [b], {}, {"const": coef}, tmp=True)
    return ctx.emit("add_const", [scaled], {}, {"const": f64(a)})


@converter("aten::rsub")
def rsub(ctx: Builder, call: Call) -> Act:
    x, other = call.positional[:2]
    if not isinstance(x, Act) or has_act(other):
        raise Refuse("rsub is supported as constant - activation")
    alpha = float(call.const("alpha")) if "alpha" in call.args else 1.0
    negated = ctx.emit("mul_const", [x], {}, {"const": -alpha}, tmp=True)
    return ctx.emit("add_const", [negated], {}, {"const": f64(other)})


@converter("aten::mul")
def mul(ctx: Builder, call: Call) -> Act:
    a, b = call.positional[:2]
    if isinstance(a, Act) and isinstance(b, Act):
        return ctx.emit("mul", [a, b])
    x, c = (a, b) if isinstance(a, Act) else (b, a)
    return ctx.emit("mul_const", [x], {}, {"const": f64(c)})


@converter("aten::div")
def div(ctx: Builder, call: Call) -> Act:
    a, b = call.positional[:2]
    if call.arg("rounding_mode") is not None:
        raise Refuse("division with rounding is not supported")
    if isinstance(a, Act) and isinstance(b, Act):
        return ctx.emit("div", [a, b])  # a normalization's step, fused by the passes (ir.FUSION_ONLY)
    if not isinstance(a, Act) or has_act(b):
        raise Refuse("division is supported as activation / constant (or / activation in a normalization)")
    return ctx.emit("mul_const", [a], {}, {"const": 1.0 / f64(b)})


@converter("aten::neg")
def neg(ctx: Builder, call: Call) -> Act:
    return ctx.emit("mul_const", [self_act(call)], {}, {"const": -1.0})


# ---------------------------------------------------------------- removed ops


@converter("aten::dropout", "aten::feature_dropout", "aten::alpha_dropout", "aten::feature_alpha_dropout")
def dropout(ctx: Builder, call: Call) -> Act:
    if call.const("train") and float(call.const("p")) > 0:
        raise Refuse("dropout in training mode (call model.eval() before tracing/scripting)")
    return ctx.alias(self_act(call))


@converter("aten::contiguous", "aten::clone", "aten::detach", "aten::alias", "aten::lift_fresh")
def identity(ctx: Builder, call: Call) -> Act:
    return ctx.alias(self_act(call))


@converter("aten::to", "aten::type_as", "aten::float", "aten::double")
def cast(ctx: Builder, call: Call) -> Any:
    first = call.args[call.schema.arguments[0].name]
    if not isinstance(first, Act):
        return call.out
    if isinstance(first, Tokens) and not call.out.is_floating_point():
        return ctx.alias(first)  # ids stay ids
    if isinstance(first, Tokens):
        raise Refuse(token_misuse(first.source))
    if not call.out.is_floating_point():
        raise Refuse(f"casting an activation to {call.out.dtype} cuts the relevance path")
    return ctx.alias(first)


@converter("aten::embedding")
def embedding(ctx: Builder, call: Call) -> Act:
    """The lookup of token ids in a constant table: its output becomes an IR graph input (``ir.TokenInput``)."""
    table, ids = call.arg("weight"), call.arg("indices")
    if has_act(table) or not isinstance(ids, Tokens):
        raise Refuse("embedding is supported as a lookup of integer token ids in a constant table")
    if table.dim() != 2 or not table.is_floating_point():
        raise Refuse(f"embedding table of shape {list(table.shape)} and type {table.dtype} is not supported")
    return ctx.embed(ids, table)
