"""aten -> IR converters for shape and routing ops: flatten/view/reshape/(un)squeeze, expand, permute/transpose,
cat/stack (also with constant parts), slice/narrow/select/index, split/chunk/unbind, padding, roll, and where /
masked_fill with a constant condition. Shapes and indices are concrete (per input shape)."""

from __future__ import annotations

from typing import Any

import torch

from .._tokens import token_misuse
from ._helpers import norm_dim, self_act
from .builder import Builder
from .values import Act, Call, Refuse, Tokens, converter, has_act


@converter(
    "aten::flatten",
    "aten::view",
    "aten::reshape",
    "aten::_reshape_alias",
    "aten::_unsafe_view",
    "aten::unflatten",
    "aten::squeeze",
    "aten::unsqueeze",
    "aten::view_as",
    "aten::reshape_as",
    "aten::expand",
    "aten::expand_as",
)
def reshape(ctx: Builder, call: Call) -> Any:
    first = call.args[call.schema.arguments[0].name]
    if not isinstance(first, Act):
        return call.out  # a constant shaped like an activation: still a constant
    if isinstance(first, Tokens):
        return _reshaped_tokens(first, call)
    shape = tuple(call.out.shape)
    if shape == tuple(first.value.shape):
        return ctx.alias(first)
    if call.kind in ("aten::expand", "aten::expand_as"):
        return ctx.emit("expand", [first], {"shape": shape})
    return ctx.emit("reshape", [first], {"shape": shape})


def _reshaped_tokens(tokens: Tokens, call: Call) -> Tokens:
    """Token ids reshaped in order (``view(-1, T)``): still ids, as long as the batch axis stays first."""
    out = call.out
    if call.kind in ("aten::expand", "aten::expand_as") and tuple(out.shape) != tuple(tokens.value.shape):
        raise Refuse(token_misuse(tokens.source))
    if out.dim() == 0 or out.shape[0] != tokens.value.shape[0]:
        raise Refuse(f"reshapes the token ids {tokens.source!r} across the batch axis")
    return Tokens(tokens.name, out, tokens.source)


def _emit_perm(ctx: Builder, x: Act, perm: list[int]) -> Act:
    if perm == list(range(len(perm))):
        return ctx.alias(x)
    return ctx.emit("permute", [x], {"perm": tuple(perm)})


@converter("aten::permute")
def permute(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    rank = x.value.dim()
    return _emit_perm(ctx, x, [norm_dim(d, rank) for d in call.const("dims")])


@converter("aten::transpose", "aten::swapaxes", "aten::swapdims", "aten::t")
def transpose(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    rank = x.value.dim()
    if call.kind == "aten::t":
        if rank < 2:
            return ctx.alias(x)
        a, b = 0, 1
    else:
        a, b = (norm_dim(v, rank) for v in call.positional[1:3])
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return _emit_perm(ctx, x, perm)


@converter("aten::cat", "aten::concat", "aten::concatenate")
def cat(ctx: Builder, call: Call) -> Act:
    """Constant parts (a class token, register tokens) become params at their operand positions; empty ones (an
    empty key/value cache) are dropped."""
    items, dim = call.positional[:2]
    acts = [item for item in items if isinstance(item, Act)]
    axis = norm_dim(dim, acts[0].value.dim())
    constants, params, position = [], {}, 0
    for item in items:
        if not isinstance(item, Act):
            if item.numel() == 0:
                continue
            key = f"const{len(constants)}"
            constants.append((position, key))
            params[key] = item
        position += 1
    if len(acts) == 1 and not constants:
        return ctx.alias(acts[0])
    attrs = {"axis": axis} | ({"constants": tuple(constants)} if constants else {})
    return ctx.emit("concat", acts, attrs, params)


@converter("aten::stack")
def stack(ctx: Builder, call: Call) -> Act:
    items, dim = call.positional[:2]
    if not all(isinstance(item, Act) for item in items):
        raise Refuse("stacking an activation with a constant is not supported")
    axis = norm_dim(dim, items[0].value.dim() + 1)
    parts = []
    for item in items:
        shape = list(item.value.shape)
        shape.insert(axis, 1)
        parts.append(ctx.emit("reshape", [item], {"shape": tuple(shape)}, tmp=True))
    if len(parts) == 1:
        return Act(parts[0].name, call.out)
    return ctx.emit("concat", parts, {"axis": axis})


def _positions(ctx: Builder, call: Call, x: Act, axis: int, indices: list[int], **emit: Any) -> Act:
    size = x.value.shape[axis]
    if indices == list(range(size)):
        return Act(x.name, emit.get("value", call.out))
    return ctx.emit("slice", [x], {"axes": (axis,), "indices": (tuple(indices),)}, **emit)


@converter("aten::slice")
def slice_(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    axis = norm_dim(call.const("dim"), x.value.dim())
    start, end, step = call.const("start"), call.const("end"), call.const("step")
    if step is not None and step <= 0:
        raise Refuse("slice with a non-positive step")
    indices = list(range(*slice(start, end, step).indices(x.value.shape[axis])))
    return _positions(ctx, call, x, axis, indices)


@converter("aten::narrow")
def narrow(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    axis = norm_dim(call.const("dim"), x.value.dim())
    start = norm_dim(int(call.const("start")), x.value.shape[axis])
    return _positions(ctx, call, x, axis, list(range(start, start + int(call.const("length")))))


def _gather(ctx: Builder, x: Act, axis: int, indices: Any, **emit: Any) -> Act:
    size = x.value.shape[axis]
    tensor = torch.as_tensor(indices, dtype=torch.long)
    tensor = torch.where(tensor < 0, tensor + size, tensor)
    return ctx.emit("gather", [x], {"axis": axis, "indices": tensor.tolist()}, **emit)


@converter("aten::select")
def select(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    return _gather(ctx, x, norm_dim(call.const("dim"), x.value.dim()), int(call.const("index")))


@converter("aten::index_select")
def index_select(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    return _gather(ctx, x, norm_dim(call.const("dim"), x.value.dim()), call.const("index"))


@converter("aten::index")
def index(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    items = call.const("indices")
    used = [(k, t) for k, t in enumerate(items) if t is not None]
    if len(used) != 1:
        raise Refuse("advanced indexing with several index tensors is not supported")
    axis, tensor = used[0]
    if tensor.dtype == torch.bool:
        if tensor.dim() != 1:
            raise Refuse("indexing with a multi-dimensional boolean mask is not supported")
        tensor = tensor.nonzero().reshape(-1)
    return _gather(ctx, x, axis, tensor)


@converter(
    "aten::split",
    "aten::split_with_sizes",
    "aten::unsafe_split",
    "aten::unsafe_split_with_sizes",
    "aten::chunk",
    "aten::unsafe_chunk",
    "aten::unbind",
)
def split(ctx: Builder, call: Call) -> list[Act]:
    x = self_act(call)
    axis = norm_dim(call.const("dim"), x.value.dim())
    base = call.node.outputsAt(0).debugName()
    pieces: list[Act] = []
    offset = 0
    for k, piece in enumerate(call.out):
        name = f"{base}[{k}]"
        if call.kind == "aten::unbind":
            pieces.append(_gather(ctx, x, axis, k, value=piece, name=name))
            continue
        length = piece.shape[axis]
        pieces.append(
            _positions(ctx, call, x, axis, list(range(offset, offset + length)), value=piece, name=name)
        )
        offset += length
    return pieces


@converter(
    "aten::pad",
    "aten::constant_pad_nd",
    "aten::reflection_pad1d",
    "aten::reflection_pad2d",
    "aten::reflection_pad3d",
    "aten::replication_pad1d",
    "aten::replication_pad2d",
    "aten::replication_pad3d",
)
def pad(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    amounts = [int(p) for p in call.const("pad")]
    if call.kind == "aten::pad":
        mode, value = call.const("mode"), call.const("value")
    elif call.kind == "aten::constant_pad_nd":
        mode, value = "constant", call.const("value")
    else:
        mode, value = ("reflect" if "reflection" in call.kind else "replicate"), None
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise Refuse(f"padding mode {mode!r} is not supported")
    rank = x.value.dim()
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(amounts) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = amounts[2 * i], amounts[2 * i + 1]
    attrs = {"pads": tuple(begins + ends), "mode": modes[mode], "value": float(value or 0.0)}
    return ctx.emit("pad", [x], attrs)


@converter("aten::roll")
def roll(ctx: Builder, call: Call) -> Act:
    x = self_act(call)
    shifts, dims = [int(s) for s in call.const("shifts")], [int(d) for d in call.const("dims")]
    if not dims:
        raise Refuse("roll over the flattened tensor (no dims) is not supported")
    rank = x.value.dim()
    return ctx.emit("roll", [x], {"shifts": tuple(shifts), "dims": tuple(norm_dim(d, rank) for d in dims)})


def _where(ctx: Builder, cond: Any, a: Any, b: Any) -> Act:
    """``where(cond, a, b)`` with a constant condition; an activation smaller than the output is expanded first."""
    if has_act(cond):
        raise Refuse("where/masked_fill with a condition that depends on the model input is not supported")
    shape = tuple(ctx.call.out.shape)
    acts = []
    for item in (a, b):
        if isinstance(item, Act) and tuple(item.value.shape) != shape:
            item = ctx.emit("expand", [item], {"shape": shape}, tmp=True)
        acts.append(item)
    a, b = acts
    if isinstance(a, Act) and isinstance(b, Act):
        return ctx.emit("where", [a, b], {}, {"cond": torch.as_tensor(cond).to(torch.bool)})
    x, other = (a, b) if isinstance(a, Act) else (b, a)
    params = {
        "cond": torch.as_tensor(cond).to(torch.bool),
        "other": torch.as_tensor(other, dtype=torch.float64),
    }
    return ctx.emit("where", [x], {"input_when": isinstance(a, Act)}, params)


@converter("aten::where")
def where(ctx: Builder, call: Call) -> Act:
    cond, a, b = call.positional[:3]
    return _where(ctx, cond, a, b)


@converter("aten::masked_fill")
def masked_fill(ctx: Builder, call: Call) -> Act:
    """``x.masked_fill(mask, value)`` = ``where(mask, value, x)`` with a constant mask and value."""
    x, mask, value = call.positional[:3]
    if not isinstance(x, Act) or has_act(value):
        raise Refuse("masked_fill is supported with a constant fill value")
    return _where(ctx, mask, value, x)
