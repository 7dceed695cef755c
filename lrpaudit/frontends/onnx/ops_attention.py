"""ONNX converters for the ops of transformer blocks: the normalizations (LayerNormalization, RMSNormalization,
GroupNormalization, InstanceNormalization), Einsum of two activations, and the fused Attention op (opset 23),
which is expanded into matmul / softmax / where / mul_const nodes."""

from __future__ import annotations

import math

import numpy as np
import onnx

from .context import Context, converter, norm_axis

# ---------------------------------------------------------------- normalizations


def _refuse_statistics_outputs(ctx: Context, node: onnx.NodeProto) -> None:
    if any(out for out in node.output[1:]):
        ctx.fail("the normalization's statistics outputs (mean, inverse std) are used; not supported")


def _affine_param(value: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """A Scale/B input broadcast to the normalized dims ``shape[axis:]``, or None if it varies along others."""
    rank = len(shape)
    value = np.asarray(value, dtype=np.float64)
    if value.ndim > rank:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if any(full.shape[i] != 1 for i in range(axis)):
        return None
    try:
        return np.broadcast_to(full.reshape(full.shape[axis:]), shape[axis:]).copy()
    except ValueError:
        return None


def _normalize(ctx: Context, node: onnx.NodeProto, center: bool, scale: str, bias: str | None) -> None:
    """LayerNormalization / RMSNormalization over the axes from ``axis`` on."""
    _refuse_statistics_outputs(ctx, node)
    shape = ctx.shape(node.input[0])
    axis = norm_axis(int(ctx.attr(node, "axis", -1)), len(shape))
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    attrs = {"axes": tuple(range(axis - len(shape), 0)), "eps": eps, "center": center}
    params, after = {}, []
    for key, name in (("weight", scale), ("bias", bias)):
        if not name:
            continue
        if not ctx.is_const(name):
            ctx.fail(f"the {key} must be constant (it depends on the model input)")
        value = ctx.const(name)
        fitted = _affine_param(value, shape, axis)
        if (
            fitted is None or after
        ):  # varies along non-normalized axes: an elementwise constant after the norm
            after.append(("mul_const" if key == "weight" else "add_const", value))
        else:
            params[key] = fitted
    out = node.output[0]
    y = ctx.emit("layernorm", [node.input[0]], out if not after else ctx.tmp(out, "norm"), attrs, params)
    for k, (op, value) in enumerate(after):
        last = k == len(after) - 1
        y = ctx.emit(op, [y], out if last else ctx.tmp(out, op), {}, {"const": value})


@converter("LayerNormalization")
def layer_normalization(ctx: Context, node: onnx.NodeProto) -> None:
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    _normalize(ctx, node, True, node.input[1], bias)


@converter("RMSNormalization")
def rms_normalization(ctx: Context, node: onnx.NodeProto) -> None:
    _normalize(ctx, node, False, node.input[1], None)


def _channel_params(ctx: Context, node: onnx.NodeProto, channels: int, per_group: int = 0) -> dict:
    """Scale and bias (inputs 1 and 2) as per-channel params; ``per_group`` > 0 repeats per-group values."""
    params = {}
    for key, index in (("weight", 1), ("bias", 2)):
        value = ctx.optional_const(node, index)
        if value is None:
            continue
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        if per_group:
            value = np.repeat(value, per_group)
        if value.shape != (channels,):
            ctx.fail(f"the {key} has {value.size} values; expected {channels}")
        params[key] = value
    return params


@converter("GroupNormalization")
def group_normalization(ctx: Context, node: onnx.NodeProto) -> None:
    """Opset 18-20: scale and bias hold one value per group; from opset 21 one per channel."""
    shape = ctx.shape(node.input[0])
    groups = int(ctx.attr(node, "num_groups"))
    if len(shape) < 2 or groups < 1 or shape[1] % groups:
        ctx.fail(f"{groups} groups do not divide the {shape[1] if len(shape) > 1 else 0} channels")
    per_group = 0 if ctx.opset >= 21 else shape[1] // groups
    params = _channel_params(ctx, node, shape[1], per_group)
    attrs = {"groups": groups, "eps": float(ctx.attr(node, "epsilon", 1e-5))}
    ctx.emit("groupnorm", [node.input[0]], node.output[0], attrs, params)


@converter("InstanceNormalization")
def instance_normalization(ctx: Context, node: onnx.NodeProto) -> None:
    shape = ctx.shape(node.input[0])
    if len(shape) < 3:
        ctx.fail("InstanceNormalization needs an input of rank >= 3 (N, C, D1, ...)")
    params = _channel_params(ctx, node, shape[1])
    attrs = {"groups": shape[1], "eps": float(ctx.attr(node, "epsilon", 1e-5))}
    ctx.emit("groupnorm", [node.input[0]], node.output[0], attrs, params)


# ---------------------------------------------------------------- products


@converter("Einsum")
def einsum(ctx: Context, node: onnx.NodeProto) -> None:
    if len(node.input) != 2 or any(ctx.is_const(name) for name in node.input):
        ctx.fail("Einsum is supported as a product of two activations")
    equation = str(ctx.attr(node, "equation")).replace(" ", "")
    ctx.emit("einsum", list(node.input), node.output[0], {"equation": equation})


# ---------------------------------------------------------------- Attention (opset 23)


def _heads_first(ctx: Context, name: str, heads: int | None, out: str) -> str:
    """A 3-D (B, S, heads * D) input as (B, heads, S, D); 4-D inputs are already so."""
    shape = ctx.shape(name)
    if len(shape) == 4:
        return name
    if len(shape) != 3 or not heads or shape[2] % heads:
        ctx.fail(f"Attention input of shape {list(shape)} does not split into {heads} heads")
    split_shape = (shape[0], shape[1], heads, shape[2] // heads)
    split = ctx.emit("reshape", [name], ctx.tmp(out, "heads"), {"shape": split_shape})
    return ctx.emit("permute", [split], ctx.tmp(out, "heads_first"), {"perm": (0, 2, 1, 3)})


def _repeat_heads(ctx: Context, name: str, heads: int, out: str) -> str:
    """Grouped-query attention: each K/V head repeated for the query heads that share it."""
    have = ctx.shape(name)[1]
    if have == heads:
        return name
    if heads % have:
        ctx.fail(f"{heads} query heads cannot share {have} key/value heads")
    indices = [h // (heads // have) for h in range(heads)]
    return ctx.emit("gather", [name], out, {"axis": 1, "indices": indices})


def _mask(ctx: Context, node: onnx.NodeProto, q_len: int, kv_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The attention mask as (allowed: bool, additive: float), both constant and broadcastable to the scores."""
    allowed = np.ones((q_len, kv_len), dtype=bool)
    additive = np.zeros((), dtype=np.float64)
    if len(node.input) > 3 and node.input[3]:
        if not ctx.is_const(node.input[3]):
            ctx.fail(
                "the attention mask depends on the model input (a mask given as a graph input is data); "
                "export the model without it so that it folds into a constant"
            )
        mask = ctx.const(node.input[3])
        missing = kv_len - mask.shape[-1]
        if missing > 0:  # a shorter mask leaves the last keys masked out
            pad = [(0, 0)] * (mask.ndim - 1) + [(0, missing)]
            mask = np.pad(mask, pad, constant_values=False if mask.dtype == np.bool_ else -np.inf)
        if mask.dtype == np.bool_:
            allowed = allowed & mask
        else:
            additive = np.asarray(mask, dtype=np.float64)
            allowed = allowed & (additive != -np.inf)
            additive = np.where(additive == -np.inf, 0.0, additive)
    if ctx.attr(node, "is_causal", 0):
        allowed = allowed & np.tril(np.ones((q_len, kv_len), dtype=bool))
    return allowed, additive


@converter("Attention")
def attention(ctx: Context, node: onnx.NodeProto) -> None:
    """Y = softmax(mask(softcap(scale * Q K^T))) V, with the opset-23 options (no KV cache, no qk output)."""
    if any(len(node.input) > i and node.input[i] for i in (4, 5, 6)):
        ctx.fail("Attention with a key/value cache (past_key, past_value, nonpad_kv_seqlen) is not supported")
    if len(node.output) > 3 and node.output[3]:
        ctx.fail("the Attention qk_matmul_output is used; not supported")
    if any(ctx.is_const(node.input[i]) for i in range(3)):
        ctx.fail("Attention with a constant query, key or value is not supported")
    out = node.output[0]
    q_heads, kv_heads = ctx.attr(node, "q_num_heads", None), ctx.attr(node, "kv_num_heads", None)
    q = _heads_first(ctx, node.input[0], q_heads, ctx.tmp(out, "q"))
    k = _heads_first(ctx, node.input[1], kv_heads, ctx.tmp(out, "k"))
    v = _heads_first(ctx, node.input[2], kv_heads, ctx.tmp(out, "v"))
    for output, value in zip(node.output[1:3], (k, v)):
        if output:
            ctx.alias(output, value)
    batch, heads, q_len, depth = ctx.shape(q)
    k = _repeat_heads(ctx, k, heads, ctx.tmp(out, "k_shared"))
    v = _repeat_heads(ctx, v, heads, ctx.tmp(out, "v_shared"))
    kv_len = ctx.shape(k)[2]
    scale = ctx.attr(node, "scale", None)
    scale = 1.0 / math.sqrt(depth) if scale is None else float(scale)
    k_t = ctx.emit("permute", [k], ctx.tmp(out, "k_t"), {"perm": (0, 1, 3, 2)})
    scores = ctx.emit("matmul", [q, k_t], ctx.tmp(out, "qk"))
    scores = ctx.emit("mul_const", [scores], ctx.tmp(out, "scaled"), {}, {"const": np.array(scale)})
    softcap = float(ctx.attr(node, "softcap", 0.0) or 0.0)
    if softcap > 0:
        scores = ctx.emit(
            "mul_const", [scores], ctx.tmp(out, "capped_in"), {}, {"const": np.array(1 / softcap)}
        )
        scores = ctx.emit("tanh", [scores], ctx.tmp(out, "capped_tanh"))
        scores = ctx.emit("mul_const", [scores], ctx.tmp(out, "capped"), {}, {"const": np.array(softcap)})
    allowed, additive = _mask(ctx, node, q_len, kv_len)
    if additive.any():
        scores = ctx.emit("add_const", [scores], ctx.tmp(out, "bias"), {}, {"const": additive})
    if not allowed.all():
        if not np.broadcast_to(allowed, (batch, heads, q_len, kv_len)).any(axis=-1).all():
            ctx.fail("the attention mask masks every key of some query (a fully masked row); not supported")
        params = {"cond": allowed, "other": np.array(-np.inf)}
        scores = ctx.emit("where", [scores], ctx.tmp(out, "masked"), {"input_when": True}, params)
    weights = ctx.emit("softmax", [scores], ctx.tmp(out, "softmax"), {"axis": 3, "coerce_2d": False})
    if len(ctx.shape(node.input[0])) == 4:
        ctx.emit("matmul", [weights, v], out)
        return
    context = ctx.emit("matmul", [weights, v], ctx.tmp(out, "context"))
    merged = ctx.emit("permute", [context], ctx.tmp(out, "merged"), {"perm": (0, 2, 1, 3)})
    ctx.emit("reshape", [merged], out, {"shape": (batch, q_len, heads * ctx.shape(v)[3])})
