"""ONNX converters for shape and routing ops: Flatten, Reshape, (Un)Squeeze, Transpose, Concat, Slice, Split,
Gather and Pad (all folded to concrete shapes and indices at load time)."""

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
    if any(ctx.is_const(name) for name in node.input):
        ctx.fail("Concat of an activation with a constant is not supported")
    rank = len(ctx.shape(node.input[0]))
    axis = norm_axis(int(ctx.attr(node, "axis")), rank)
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
    if any(a == 0 for a, _ in picks):
        ctx.fail("Slice along the batch axis is not supported")
    axes_kept, indices = zip(*picks)
    ctx.emit("slice", [node.input[0]], node.output[0], {"axes": tuple(axes_kept), "indices": tuple(indices)})


@converter("Split")
def split(ctx: Context, node: onnx.NodeProto) -> None:
    """One ``slice`` per output; sizes from the ``split`` attribute (< 13) or input (13+), else equal parts."""
    shape = ctx.shape(node.input[0])
    axis = norm_axis(int(ctx.attr(node, "axis", 0)), len(shape))
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
    axis = norm_axis(int(ctx.attr(node, "axis", 0)), len(shape))
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
            axes = [norm_axis(int(a), rank) for a in np.ravel(axes_c)]
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
