"""aten -> IR converters for the ops of transformer blocks: the normalizations (layer_norm, rms_norm, group_norm,
instance_norm), products of two activations (einsum, baddbmm), and the elementwise steps of decomposed
normalizations and activations (pow, sqrt, rsqrt, reciprocal, square), which the passes fuse (``ir.FUSION_ONLY``).
The fused attention kernels are expanded in ``ops_fused``."""

from __future__ import annotations

from typing import Any

import torch

from ._helpers import f64, self_act
from .builder import Builder
from .values import Act, Call, Poison, Refuse, converter, has_act

# ---------------------------------------------------------------- normalizations


def _affine(call: Call, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    params = {}
    for key in ("weight", "bias"):
        value = call.const(key) if key in call.args else None
        if value is not None:
            if tuple(value.shape) != tuple(shape):
                raise Refuse(f"the {key} has shape {list(value.shape)}; expected {list(shape)}")
            params[key] = f64(value)
    return params


def _layernorm(ctx: Builder, call: Call, center: bool, **emit: Any) -> Act:
    x = call.act("input")
    normalized = tuple(int(d) for d in call.const("normalized_shape"))
    if tuple(x.value.shape[-len(normalized) :]) != normalized or len(normalized) >= x.value.dim():
        raise Refuse(
            f"normalized shape {list(normalized)} does not fit an input of shape {list(x.value.shape)}"
        )
    eps = call.const("eps")
    if eps is None:  # rms_norm's default: the machine epsilon of the input's type
        eps = torch.finfo(x.value.dtype).eps
    attrs = {"axes": tuple(range(-len(normalized), 0)), "eps": float(eps), "center": center}
    owner = call.qualnames.get("weight")
    return ctx.emit("layernorm", [x], attrs, _affine(call, normalized), weight=owner, **emit)


@converter("aten::layer_norm")
def layer_norm(ctx: Builder, call: Call) -> Act:
    return _layernorm(ctx, call, True)


@converter("aten::rms_norm")
def rms_norm(ctx: Builder, call: Call) -> Act:
    return _layernorm(ctx, call, False)


@converter("aten::native_layer_norm")
def native_layer_norm(ctx: Builder, call: Call) -> tuple:
    out = _layernorm(ctx, call, True, value=call.out[0])
    statistic = Poison("the mean / inverse std outputs of native_layer_norm are not supported")
    return out, statistic, statistic


@converter("aten::group_norm")
def group_norm(ctx: Builder, call: Call) -> Act:
    x = call.act("input")
    groups = int(call.const("num_groups"))
    if x.value.dim() < 2 or x.value.shape[1] % groups:
        raise Refuse(f"{groups} groups do not divide the channels of an input of shape {list(x.value.shape)}")
    attrs = {"groups": groups, "eps": float(call.const("eps"))}
    params = _affine(call, (x.value.shape[1],))
    return ctx.emit("groupnorm", [x], attrs, params, weight=call.qualnames.get("weight"))


@converter("aten::instance_norm")
def instance_norm(ctx: Builder, call: Call) -> Act:
    """With the input's statistics: GroupNorm with one group per channel; with running statistics: an affine map."""
    x = call.act("input")
    if x.value.dim() < 3:
        raise Refuse("instance norm needs an input of rank >= 3 (N, C, ...)")
    channels = x.value.shape[1]
    params = _affine(call, (channels,))
    if call.const("use_input_stats"):
        attrs = {"groups": channels, "eps": float(call.const("eps"))}
        return ctx.emit("groupnorm", [x], attrs, params, weight=call.qualnames.get("weight"))
    mean, var = call.const("running_mean"), call.const("running_var")
    if mean is None or var is None:
        raise Refuse("instance norm without input statistics needs running statistics")
    scale = params.get("weight", torch.ones(channels, dtype=torch.float64)) / torch.sqrt(
        f64(var) + float(call.const("eps"))
    )
    shift = params.get("bias", torch.zeros(channels, dtype=torch.float64)) - f64(mean) * scale
    return ctx.emit("affine", [x], {"source": "instancenorm"}, {"weight": scale, "bias": shift})


# ---------------------------------------------------------------- products


@converter("aten::einsum")
def einsum(ctx: Builder, call: Call) -> Act:
    operands = call.arg("tensors")
    if len(operands) != 2 or not all(isinstance(t, Act) for t in operands):
        raise Refuse("einsum is supported as a product of two activations")
    return ctx.emit("einsum", list(operands), {"equation": str(call.const("equation")).replace(" ", "")})


@converter("aten::baddbmm")
def baddbmm(ctx: Builder, call: Call) -> Act:
    """``beta * self + alpha * (batch1 @ batch2)`` with two activation factors and a constant (or no) ``self``."""
    a, b, base = call.arg("batch1"), call.arg("batch2"), call.arg("self")
    if not (isinstance(a, Act) and isinstance(b, Act)) or has_act(base):
        raise Refuse("baddbmm is supported as constant + product of two activations")
    alpha, beta = float(call.const("alpha")), float(call.const("beta"))
    y = ctx.emit("matmul", [a, b], tmp=True)
    if alpha != 1.0:
        y = ctx.emit("mul_const", [y], {}, {"const": alpha}, tmp=True)
    shift = beta * f64(base) if beta != 0.0 else torch.zeros(())
    return ctx.emit("add_const", [y], {}, {"const": shift})


# ---------------------------------------------------------------- steps of decompositions (ir.FUSION_ONLY)


@converter("aten::pow")
def pow_(ctx: Builder, call: Call) -> Act:
    x, exponent = call.positional[:2]
    if not isinstance(x, Act) or has_act(exponent):
        raise Refuse("pow is supported as an activation to a constant scalar power")
    if isinstance(exponent, torch.Tensor):
        if exponent.numel() != 1:
            raise Refuse("pow by a tensor of exponents is not supported")
        exponent = float(exponent)
    return ctx.emit("pow", [x], {"exponent": float(exponent)})


@converter("aten::square")
def square(ctx: Builder, call: Call) -> Act:
    return ctx.emit("pow", [self_act(call)], {"exponent": 2.0})


def _unary(op: str):
    def convert(ctx: Builder, call: Call) -> Act:
        return ctx.emit(op, [self_act(call)])

    return convert


for _kind, _op in {"aten::sqrt": "sqrt", "aten::rsqrt": "rsqrt", "aten::reciprocal": "reciprocal"}.items():
    converter(_kind)(_unary(_op))
