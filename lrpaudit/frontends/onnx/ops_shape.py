"""ONNX converters for shape and routing ops: Flatten, Reshape, (Un)Squeeze, Transpose, Concat (also with constant
parts), Slice, Split, Gather, Pad, Expand and Where with a constant condition (all folded to concrete shapes and
indices at load time)."""

from __future__ import annotations

import numpy as np
import onnx

from .context import Context, converter, norm_axis

# ---------------------------------------------------------------- shape / routing


def _reshape_to(ctx: Context, node: onnx.NodeProto, shape: tuple[int, ...]) -> None:
    ctx.emit("reshape", [node.input[0]], node.output[0], {"shape": tuple(int(s) for s in shape)})


@converter("Flatten")
def flatten(ctx: Context, node: onnx.NodeProto) -> None:
    shape = ctx.shape(node.input[0])
    axis = norm_axis(int(ctx.attr(node, "axis", 1)), len(shape))
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
        else [norm_axis(a, len(shape)) for a in axes]
    )
    _reshape_to(ctx, node, tuple(s for i, s in enumerate(shape) if i not in axes))


@converter("Unsqueeze")
def unsqueeze(ctx: Context, node: onnx.NodeProto) -> None:
    shape = list(ctx.shape(node.input[0]))
    axes = _axes(ctx, node) or []
    rank = len(shape) + len(axes)
    for axis in sorted(norm_axis(a, rank) for a in axes):
        shape.insert(axis, 1)
    _reshape_to(ctx, node, tuple(shape))


@converter("Transpose")
def transpose(ctx: Context, node: onnx.NodeProto) -> None:
    rank = len(ctx.shape(node.input[0]))
    perm = ctx.attr(node, "perm", None) or list(reversed(range(rank)))
    ctx.emit("permute", [node.input[0]], node.output[0], {"perm": tuple(int(p) for p in perm)})


@converter("Concat")
def concat(ctx: Context, node: onnx.NodeProto) -> None:
    """Constant parts (a class token, register tokens) become params at their operand positions; empty ones
    (an empty key/value cache) are dropped."""
    acts = [name for name in node.input if not ctx.is_const(name)]
    rank = len(ctx.shape(acts[0]))
    axis = norm_axis(int(ctx.attr(node, "axis")), rank)
    constants, params, position = [], {}, 0
    for name in node.input:
        if not ctx.is_const(name):
            position += 1
            continue
        value = ctx.const(name)
        if value.size == 0:
            continue
        key = f"const{len(constants)}"
        constants.append((position, key))
        params[key] = value
        position += 1
    if len(acts) == 1 and not constants:
        ctx.alias(node.output[0], acts[0])
        return
    attrs = {"axis": axis} | ({"constants": tuple(constants)} if constants else {})
    ctx.emit("concat", acts, node.output[0], attrs, params)


@converter("Expand")
def expand(ctx: Context, node: onnx.NodeProto) -> None:
    """Broadcast an activation to a larger shape (ONNX's two-way broadcast of the input and the shape)."""
    shape_in = ctx.shape(node.input[0])
    target = [int(s) for s in np.ravel(ctx.optional_const(node, 1))]
    shape = np.broadcast_shapes(tuple(shape_in), tuple(target))
    if tuple(shape) == tuple(shape_in):
        ctx.alias(node.output[0], node.input[0])
        return
    ctx.emit("expand", [node.input[0]], node.output[0], {"shape": tuple(int(s) for s in shape)})


@converter("IsNaN")
def is_nan(ctx: Context, node: onnx.NodeProto) -> None:
    """The NaN test of torch's attention export, ``Where(IsNaN(p), 0, p)`` after a softmax: recorded for ``Where``."""
    producer = next((n for n in reversed(ctx.nodes) if n.output == ctx.name(node.input[0])), None)
    if producer is None or producer.op != "softmax":
        ctx.fail("IsNaN of an activation is supported only as the NaN guard after a softmax")
    ctx.nan_tests[node.output[0]] = ctx.name(node.input[0])


def _nan_guard(ctx: Context, node: onnx.NodeProto) -> None:
    """``Where(IsNaN(p), c, p)``: p itself. A softmax is NaN only on a row of -inf (every key masked) or of NaN/inf
    logits; there the IR gives NaN where the runtime gives c, and the forward check refuses the batch."""
    cond, a, b = node.input
    tested = ctx.nan_tests[ctx.name(cond)]
    if not ctx.is_const(a) or ctx.is_const(b) or ctx.name(b) != tested:
        ctx.fail("a NaN test is supported only as the guard Where(IsNaN(p), constant, p)")
    ctx.alias(node.output[0], b)


@converter("Where")
def where(ctx: Context, node: onnx.NodeProto) -> None:
    """``Where(cond, X, Y)`` with a constant condition; an activation smaller than the output is expanded first."""
    cond, a, b = node.input
    if ctx.name(cond) in ctx.nan_tests:
        _nan_guard(ctx, node)
        return
    if not ctx.is_const(cond):
        ctx.fail(
            "Where with a condition that depends on the model input (data-dependent selection) is not supported"
        )
    cond_value = ctx.const(cond).astype(bool)
    out = node.output[0]
    acts = [name for name in (a, b) if not ctx.is_const(name)]
    shape = np.broadcast_shapes(
        cond_value.shape,
        *(np.shape(ctx.const(n)) for n in (a, b) if ctx.is_const(n)),
        *(ctx.shape(n) for n in acts),
    )
    full = []
    for name in acts:
        if ctx.shape(name) != tuple(shape):
            name = ctx.emit("expand", [name], ctx.tmp(out, f"expand_{name}"), {"shape": tuple(shape)})
        full.append(name)
    if len(full) == 2:
        ctx.emit("where", full, out, {}, {"cond": cond_value})
        return
    other = b if ctx.is_const(b) else a
    attrs = {"input_when": not ctx.is_const(a)}
    constant = np.asarray(ctx.const(other), dtype=np.float64)
    ctx.emit("where", full, out, attrs, {"cond": cond_value, "other": constant})


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
        list(range(len(starts))) if axes is None else [norm_axis(int(a), len(shape)) for a in np.ravel(axes)]
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
    axes_kept, indices = zip(*picks)
    ctx.emit("slice", [node.input[0]], node.output[0], {"axes": tuple(axes_kept), "indices": tuple(indices)})


@converter("Split")
def split(ctx: Context, node: onnx.NodeProto) -> None:
    """One ``slice`` per output; sizes from the ``split`` attribute (< 13) or input (13+), else equal parts."""
    shape = ctx.shape(node.input[0])
    axis = norm_axis(int(ctx.attr(node, "axis", 0)), len(shape))
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
    axis = norm_axis(int(ctx.attr(node, "axis", 0)), len(shape))
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
            axes = [norm_axis(int(a), rank) for a in np.ravel(axes_c)]
            full = [0] * (2 * rank)
            for k, axis in enumerate(axes):
                full[axis], full[axis + rank] = pads[k], pads[k + len(axes)]
            pads = full
    if mode not in ("constant", "reflect", "edge"):
        ctx.fail(f"Pad mode {mode!r} is not supported")
    ctx.emit(
        "pad",
        [node.input[0]],
        node.output[0],
        {"pads": tuple(int(p) for p in pads), "mode": mode, "value": value},
    )
