"""The output shape of every IR op from its input shapes, attributes and param shapes: arithmetic on tuples, no
tensors.

The frontends build the IR with these (``ctx.emit``, the batch-first pass), so a graph costs no kernel calls to
build: shape-only (meta) tensors went through torch's Python reference kernels, ~0.05-0.5 ms a node, and their
first use imported torch's decompositions and dynamo (1-3 s per process). Each function also refuses what its op's
forward would refuse (input channels, inner dimensions, broadcasting, ranks, axes, indices) with a
:class:`ShapeError` that says why. ``forward.run_forward`` compares every value it computes with the graph's
shape, so a shape here that disagrees with the op's forward is a loud internal error, never a silent one.

This module holds the registry and the ops that keep, broadcast or move values; :mod:`.shapes_layers` the
linear-type ops, pools, products and norms (the package imports both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Shape = tuple[int, ...]
ShapeFn = Callable[[list[Shape], dict[str, Any], dict[str, Shape]], Shape]

SHAPES: dict[str, ShapeFn] = {}


class ShapeError(ValueError):
    """The op cannot take inputs (or params) of these shapes; the message says why."""


def shape_of(*ops: str) -> Callable[[ShapeFn], ShapeFn]:
    def deco(fn: ShapeFn) -> ShapeFn:
        for op in ops:
            SHAPES[op] = fn
        return fn

    return deco


def infer_shape(op: str, inputs: Sequence[Shape], attrs: dict[str, Any], params: dict[str, Shape]) -> Shape:
    """The output shape of ``op`` on inputs of these shapes; a ShapeError if they do not fit it."""
    fn = SHAPES.get(op)
    if fn is None:
        raise ShapeError(f"IR op {op!r} has no shape function")
    return tuple(int(d) for d in fn([tuple(s) for s in inputs], attrs, params))


def axis_of(axis: int, rank: int) -> int:
    """A possibly negative axis of a rank-``rank`` value as a non-negative one."""
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def broadcast(*shapes: Shape) -> Shape:
    """numpy/torch broadcasting of several shapes."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        sizes = {s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ShapeError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _rank_at_least(shape: Shape, rank: int, what: str) -> None:
    if len(shape) < rank:
        raise ShapeError(f"{what} needs an input of rank {rank} or more, got {list(shape)}")


# ---------------------------------------------------------------- elementwise


@shape_of(
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "softplus", "erf", "hardswish", "hardsigmoid",
    "clip", "pow", "sqrt", "rsqrt", "reciprocal",
)  # fmt: skip
def same(inputs, attrs, params):
    return inputs[0]


@shape_of("add", "mul", "div")
def of_activations(inputs, attrs, params):
    return broadcast(*inputs)


@shape_of("add_const", "mul_const")
def with_constant(inputs, attrs, params):
    return broadcast(inputs[0], params["const"])


@shape_of("where")
def where(inputs, attrs, params):
    others = [params["other"]] if len(inputs) == 1 else []
    return broadcast(params["cond"], *inputs, *others)


@shape_of("lrn")
def lrn(inputs, attrs, params):
    _rank_at_least(inputs[0], 2, "LRN")
    return inputs[0]


@shape_of("softmax", "log_softmax")
def softmax(inputs, attrs, params):
    axis_of(attrs["axis"], len(inputs[0]))
    return inputs[0]


# ---------------------------------------------------------------- routing


@shape_of("reshape")
def reshape(inputs, attrs, params):
    """torch ``reshape``: one ``-1`` at most, inferred; the element count must match."""
    (x,), target = inputs, [int(d) for d in attrs["shape"]]
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise ShapeError(f"cannot reshape {list(x)} to {target}")
    known = math.prod(d for d in target if d != -1)
    total = math.prod(x)
    if -1 in target:
        if known == 0 or total % known:
            raise ShapeError(f"cannot reshape {list(x)} ({total} elements) to {target}")
        target[target.index(-1)] = total // known
    elif known != total:
        raise ShapeError(f"cannot reshape {list(x)} ({total} elements) to {target}")
    return tuple(target)


@shape_of("permute")
def permute(inputs, attrs, params):
    (x,), perm = inputs, [axis_of(int(p), len(inputs[0])) for p in attrs["perm"]]
    if sorted(perm) != list(range(len(x))):
        raise ShapeError(f"{list(attrs['perm'])} is no permutation of the axes of {list(x)}")
    return tuple(x[p] for p in perm)


@shape_of("concat")
def concat(inputs, attrs, params):
    """Concatenation along ``axis`` of the inputs and the constant parts (at their positions)."""
    operands = list(inputs)
    for position, name in sorted(attrs.get("constants", ())):
        operands.insert(position, params[name])
    rank = len(operands[0])
    axis = axis_of(attrs["axis"], rank)
    for part in operands:
        others = [d for k, d in enumerate(part) if k != axis]
        if len(part) != rank or others != [d for k, d in enumerate(operands[0]) if k != axis]:
            raise ShapeError(f"cannot concatenate {[list(p) for p in operands]} along axis {attrs['axis']}")
    return tuple(sum(p[axis] for p in operands) if k == axis else d for k, d in enumerate(operands[0]))


def _positions(index, size: int) -> tuple[int, ...]:
    """The shape of an index list (nested lists or an array) whose entries must be positions 0 .. size - 1."""
    flat, shape = _flatten(index)
    bad = [int(i) for i in flat if not 0 <= int(i) < size]
    if bad:
        raise ShapeError(f"index {bad[0]} is out of range for an axis of size {size}")
    return shape


def _flatten(index) -> tuple[list, tuple[int, ...]]:
    if hasattr(index, "shape") and hasattr(index, "reshape"):  # a numpy array
        return list(index.reshape(-1)), tuple(int(d) for d in index.shape)
    if isinstance(index, (list, tuple)):
        parts = [_flatten(item) for item in index]
        inner = parts[0][1] if parts else ()
        if any(p[1] != inner for p in parts):
            raise ShapeError("ragged index list")
        return [v for p in parts for v in p[0]], (len(parts), *inner)
    return [index], ()


@shape_of("slice")
def slice_(inputs, attrs, params):
    out = list(inputs[0])
    for axis, index in zip(attrs["axes"], attrs["indices"]):
        axis = axis_of(axis, len(out))
        shape = _positions(index, out[axis])
        if len(shape) != 1:
            raise ShapeError(f"slice positions of shape {list(shape)}: one list per axis expected")
        out[axis] = shape[0]
    return tuple(out)


@shape_of("gather")
def gather(inputs, attrs, params):
    """The IR's gather axis is non-negative (the frontends normalize it; the forward reads ``shape[:axis]``)."""
    x, axis = inputs[0], int(attrs["axis"])
    if not 0 <= axis < len(x):
        raise ShapeError(f"gather axis {axis} is not an axis of {list(x)}")
    indices = _positions(attrs["indices"], x[axis])
    return (*x[:axis], *indices, *x[axis + 1 :])


@shape_of("pad")
def pad(inputs, attrs, params):
    """ONNX pads ``[b1..bn, e1..en]``; negative pads crop. Constant mode pads the last n axes (F.pad), the
    reflect and edge modes every axis."""
    x, pads = list(inputs[0]), [int(p) for p in attrs["pads"]]
    n = len(pads) // 2
    mode = attrs.get("mode", "constant")
    if n > len(x) or (mode != "constant" and n != len(x)):
        raise ShapeError(f"pads {pads} do not fit an input of shape {x}")
    for j in range(n):
        axis = len(x) - n + j if mode == "constant" else j
        if mode != "constant" and x[axis] == 0 and pads[j] + pads[j + n]:
            raise ShapeError(f"cannot {mode}-pad an empty axis of {x}")
        x[axis] += pads[j] + pads[j + n]
        if x[axis] < 0:
            raise ShapeError(f"pads {pads} crop more than the input {list(inputs[0])} holds")
    return tuple(x)


@shape_of("expand")
def expand(inputs, attrs, params):
    """torch ``expand``: new leading axes, and size-1 axes repeated; ``-1`` keeps an axis."""
    x, target = inputs[0], [int(d) for d in attrs["shape"]]
    lead = len(target) - len(x)
    if lead < 0 or any(d < 0 for d in target[:lead]):
        raise ShapeError(f"cannot expand {list(x)} to {target}")
    out = target[:lead]
    for have, want in zip(x, target[lead:]):
        if want == -1:
            want = have
        if have not in (1, want):
            raise ShapeError(f"cannot expand {list(x)} to {target}")
        out.append(want)
    return tuple(out)


@shape_of("roll")
def roll(inputs, attrs, params):
    for axis in attrs["dims"]:
        axis_of(axis, len(inputs[0]))
    if len(attrs["shifts"]) != len(attrs["dims"]):
        raise ShapeError(f"roll with {len(attrs['shifts'])} shifts for {len(attrs['dims'])} axes")
    return inputs[0]
