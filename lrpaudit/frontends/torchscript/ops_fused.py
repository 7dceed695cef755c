"""The fused attention kernels that traced models contain, expanded into IR ops (checked against aten there):

* ``aten::scaled_dot_product_attention``: ``softmax(mask(scale * Q K^T)) V`` (torch's math definition);
* ``aten::_native_multi_head_attention``: ``nn.MultiheadAttention``'s fast path (batch first, under no_grad);
* ``aten::_transformer_encoder_layer_fwd``: ``nn.TransformerEncoderLayer``'s fast path (attention, residual, layer
  norms and the feed-forward block, ``norm_first`` or not).

Masks must be constant (a mask given as a model input is data: refused). A boolean ``attn_mask`` of SDPA marks the
keys that take part; the masks of the two fast paths mark the keys that are masked out. A fully masked query row
(torch gives NaN or zeros, depending on the kernel) is refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._helpers import f64
from .builder import Builder
from .values import Act, Call, Poison, Refuse, converter, has_act


def _constant_mask(call: Call, name: str) -> torch.Tensor | None:
    mask = call.arg(name)
    if has_act(mask):
        raise Refuse(
            f"the attention mask {name!r} depends on the model input (a mask given as an input is data); "
            "export the model without it so that it folds into a constant"
        )
    return mask


def _attend(
    ctx: Builder,
    q: Act,
    k: Act,
    v: Act,
    scale: float,
    allowed: torch.Tensor | None,
    additive: torch.Tensor | None,
    **emit: Any,
) -> tuple[Act, Act]:
    """``softmax(where(allowed, scale * q k^T + additive, -inf)) v`` over the last two axes, and the softmax."""
    rank = k.value.dim()
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    k_t = ctx.emit("permute", [k], {"perm": perm}, tmp=True)
    scores = ctx.emit("matmul", [q, k_t], tmp=True)
    scores = ctx.emit("mul_const", [scores], {}, {"const": scale}, tmp=True)
    if additive is not None and bool((additive != 0).any()):
        scores = ctx.emit("add_const", [scores], {}, {"const": f64(additive)}, tmp=True)
    if allowed is not None and not bool(allowed.all()):
        if not bool(torch.broadcast_to(allowed, scores.value.shape).any(dim=-1).all()):
            raise Refuse(
                "the attention mask masks every key of some query (a fully masked row); not supported"
            )
        params = {"cond": allowed.to(torch.bool), "other": torch.tensor(-math.inf, dtype=torch.float64)}
        scores = ctx.emit("where", [scores], {"input_when": True}, params, tmp=True)
    weights = ctx.emit("softmax", [scores], {"axis": rank - 1, "coerce_2d": False}, tmp=True)
    return ctx.emit("matmul", [weights, v], **emit), weights


def _split_mask(
    mask: torch.Tensor | None, allowed_when: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(allowed, additive) of a boolean or float attention mask."""
    if mask is None:
        return None, None
    if mask.dtype == torch.bool:
        return (mask if allowed_when else ~mask), None
    allowed = mask != -math.inf
    return allowed, torch.where(allowed, mask, torch.zeros_like(mask))


@converter("aten::scaled_dot_product_attention")
def scaled_dot_product_attention(ctx: Builder, call: Call) -> Act:
    q, k, v = call.act("query"), call.act("key"), call.act("value")
    if float(call.const("dropout_p")) > 0:
        raise Refuse("scaled_dot_product_attention with dropout (a model traced in training mode)")
    allowed, additive = _split_mask(_constant_mask(call, "attn_mask"), True)
    length, keys = q.value.shape[-2], k.value.shape[-2]
    if call.const("is_causal"):
        causal = torch.ones(length, keys, dtype=torch.bool).tril()
        allowed = causal if allowed is None else allowed & causal
    if call.const("enable_gqa") and k.value.shape[-3] != q.value.shape[-3]:
        heads, shared = q.value.shape[-3], k.value.shape[-3]
        index = [h // (heads // shared) for h in range(heads)]
        axis = k.value.dim() - 3
        k = ctx.emit("gather", [k], {"axis": axis, "indices": index}, tmp=True)
        v = ctx.emit("gather", [v], {"axis": axis, "indices": index}, tmp=True)
    scale = call.const("scale")
    scale = 1.0 / math.sqrt(q.value.shape[-1]) if scale is None else float(scale)
    return _attend(ctx, q, k, v, scale, allowed, additive)[0]


def _fast_path_mask(call: Call, batch: int, length: int) -> torch.Tensor | None:
    """The fast paths' mask (True = masked out) as 'allowed' over (B, H, L, L) by its mask_type."""
    mask = _constant_mask(call, "mask")
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise Refuse("a float mask on the fused attention fast path is not supported")
    kind = call.arg("mask_type")
    if kind == 1:  # key padding: (B, L)
        mask = mask.reshape(batch, 1, 1, length)
    elif kind == 0:  # one mask for every query: (L, L)
        mask = mask.reshape(1, 1, length, length)
    return ~mask


def _multi_head(
    ctx: Builder,
    x: Act,
    heads: int,
    weights: dict[str, torch.Tensor],
    mask: torch.Tensor | None,
    sources: tuple[Act, Act] | None = None,
    **emit: Any,
) -> tuple[Act, Act]:
    """The attention block of the fast paths: (output after the projection, softmax weights)."""
    batch, length, dim = x.value.shape
    depth = dim // heads
    parts = []
    if sources is None or all(source.name == x.name for source in sources):
        qkv = ctx.emit(
            "linear", [x], {}, {"weight": weights["qkv_weight"], "bias": weights["qkv_bias"]}, tmp=True
        )
        split = ctx.emit("reshape", [qkv], {"shape": (batch, length, 3, heads, depth)}, tmp=True)
        split = ctx.emit("permute", [split], {"perm": (0, 2, 3, 1, 4)}, tmp=True)
        parts = [ctx.emit("gather", [split], {"axis": 1, "indices": i}, tmp=True) for i in range(3)]
    else:
        for i, source in enumerate((x, *sources)):
            rows = slice(i * dim, (i + 1) * dim)
            params = {"weight": weights["qkv_weight"][rows], "bias": weights["qkv_bias"][rows]}
            y = ctx.emit("linear", [source], {}, params, tmp=True)
            y = ctx.emit("reshape", [y], {"shape": (batch, length, heads, depth)}, tmp=True)
            parts.append(ctx.emit("permute", [y], {"perm": (0, 2, 1, 3)}, tmp=True))
    q, k, v = parts
    context, softmax = _attend(ctx, q, k, v, 1.0 / math.sqrt(depth), mask, None, tmp=True)
    merged = ctx.emit("permute", [context], {"perm": (0, 2, 1, 3)}, tmp=True)
    merged = ctx.emit("reshape", [merged], {"shape": (batch, length, dim)}, tmp=True)
    params = {"weight": weights["proj_weight"], "bias": weights["proj_bias"]}
    return ctx.emit("linear", [merged], {}, params, **emit), softmax


def _weights(call: Call, *names: str) -> dict[str, torch.Tensor]:
    out = {}
    for name in names:
        value = call.const(name)
        if value is None:
            raise Refuse(f"the fused kernel's {name} is missing")
        out[name] = f64(value)
    return out


@converter("aten::_native_multi_head_attention")
def native_multi_head_attention(ctx: Builder, call: Call) -> tuple[Act, Any]:
    x, key, value = call.act("query"), call.act("key"), call.act("value")
    if x.value.dim() != 3:
        raise Refuse("the fused multi-head attention expects a (batch, length, embedding) input")
    heads = int(call.const("num_head"))
    names = ("qkv_weight", "qkv_bias", "proj_weight", "proj_bias")
    mask = _fast_path_mask(call, x.value.shape[0], x.value.shape[1])
    out, softmax = _multi_head(ctx, x, heads, _weights(call, *names), mask, (key, value), value=call.out[0])
    if not call.const("need_weights"):
        return out, Poison(
            "the attention weights of a fused multi-head attention called with need_weights=False"
        )
    if call.const("average_attn_weights"):
        mean = ctx.emit("mean", [softmax], {"axes": (1,), "keepdims": False}, value=call.out[1])
        return out, mean
    return out, Act(softmax.name, call.out[1])


@converter("aten::_transformer_encoder_layer_fwd")
def transformer_encoder_layer(ctx: Builder, call: Call) -> Act:
    """``nn.TransformerEncoderLayer`` (fast path): attention + residual, feed-forward + residual, two layer norms
    (before each block with ``norm_first``, after it otherwise)."""
    src = call.act("src")
    if src.value.dim() != 3:
        raise Refuse("the fused encoder layer expects a (batch, length, embedding) input")
    heads, eps = int(call.const("num_heads")), float(call.const("eps"))
    first = bool(call.const("norm_first"))
    names = ("qkv_weight", "qkv_bias", "proj_weight", "proj_bias")
    weights = _weights(call, *names, "ffn_weight_1", "ffn_bias_1", "ffn_weight_2", "ffn_bias_2")
    norms = [_weights(call, f"norm_weight_{i}", f"norm_bias_{i}") for i in (1, 2)]
    mask = _fast_path_mask(call, src.value.shape[0], src.value.shape[1])

    def norm(x: Act, i: int, **emit: Any) -> Act:
        params = {"weight": norms[i][f"norm_weight_{i + 1}"], "bias": norms[i][f"norm_bias_{i + 1}"]}
        return ctx.emit("layernorm", [x], {"axes": (-1,), "eps": eps, "center": True}, params, **emit)

    x = norm(src, 0, tmp=True) if first else src
    x, _ = _multi_head(ctx, x, heads, weights, mask, tmp=True)
    x = ctx.emit("add", [x, src], tmp=True)
    x = x if first else norm(x, 0, tmp=True)
    residual = x
    x = norm(x, 1, tmp=True) if first else x
    x = ctx.emit(
        "linear", [x], {}, {"weight": weights["ffn_weight_1"], "bias": weights["ffn_bias_1"]}, tmp=True
    )
    if call.const("use_gelu"):
        x = ctx.emit("gelu", [x], {"approximate": "none"}, tmp=True)
    else:
        x = ctx.emit("relu", [x], tmp=True)
    x = ctx.emit(
        "linear", [x], {}, {"weight": weights["ffn_weight_2"], "bias": weights["ffn_bias_2"]}, tmp=True
    )
    if first:
        return ctx.emit("add", [x, residual])
    x = ctx.emit("add", [x, residual], tmp=True)
    return norm(x, 1)
