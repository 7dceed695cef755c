"""Moving the batch axis to the front of every value (``batch_first``), and refusing ops that mix samples.

The audit is per sample: the LRP rules sum each value over every axis but the first. Code written for sequence-first
tensors (``nn.MultiheadAttention`` inside torchvision's ViT, as both ONNX exporters record it) carries values such as
``(L, B, E)``, ``(B*H, L, D)`` or ``(L*B, E)``. This pass follows the batch through every op (``layouts``) and
rewrites each node whose values do not have it alone on axis 0 to compute their canonical form instead (batch first,
the other axes in their order), adjusting its axes, shapes and constants. Rewritten values get the suffix
``::batch_first`` (they are no tensors of the source model, so the forward check does not compare them).

An op that works across the batch (a reduction, slice, softmax or normalization over it, a reshape that splits it)
is refused naming the node, and so is a model output whose batch axis is not axis 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import UnsupportedOpError
from ..ir import ACTIVATION_OPS, FUSION_ONLY, Graph, Node
from ..ops import ShapeError, infer_shape
from . import layouts as lay
from .cleanup import clone

UNARY = ACTIVATION_OPS | (FUSION_ONLY - {"div"})
# Ops that keep every axis in place: on batch-first inputs their output is batch first too.
ELEMENTWISE = UNARY | {"add", "mul", "div", "where", "add_const", "mul_const"}
SUFFIX = "::batch_first"


class _Refuse(Exception):
    """The op works across the batch axis."""


class _Unknown(Exception):
    """The pass has no rule for this op on a value whose batch axis moved."""


def _constant(value: torch.Tensor, layout: lay.Layout, batch: int, keep_batch: bool = False) -> torch.Tensor:
    """A constant that broadcasts against a value of ``layout``, in that value's canonical form."""
    full = value.expand(lay.sizes(layout)) if value.dim() <= len(layout) else value
    canon = lay.to_canonical(full.contiguous(), layout, batch)
    if not keep_batch and batch > 1 and bool((canon == canon[:1]).all()):
        return canon[:1].clone()
    return canon.clone()


def _axis(layout: lay.Layout, axis: int, what: str) -> int:
    """The canonical position of ``axis``, which must not hold the samples."""
    if lay.holds_batch(layout, axis):
        raise _Refuse(f"{what} along the batch axis mixes samples")
    return lay.canonical_axis(layout, axis)


def _same(layouts: list[lay.Layout], batch: int, what: str) -> lay.Layout:
    shapes = [lay.canonical_shape(x, batch) for x in layouts]
    same = all(s == shapes[0] for s in shapes) and (
        batch == 1 or all(lay.signature(x) == lay.signature(layouts[0]) for x in layouts)
    )
    if not same:
        raise _Refuse(f"{what} of values whose batch axes do not line up")
    return layouts[0]


def _handle(node: Node, ins: list[lay.Layout], out_shape: tuple[int, ...], batch: int) -> tuple:
    """(output layout, new attrs, new params) of the node rewritten on canonical values."""
    op, attrs, params = node.op, dict(node.attrs), dict(node.params)
    x = ins[0] if ins else ()
    if op in UNARY:
        return x, attrs, params
    if op in ("add", "mul", "div"):
        return _same(ins, batch, op), attrs, params
    if op in ("add_const", "mul_const"):
        params["const"] = _constant(params["const"], x, batch)
        return x, attrs, params
    if op == "where":
        out = _same(ins, batch, op)
        params["cond"] = _constant(params["cond"], out, batch)
        if "other" in params:
            params["other"] = _constant(params["other"], out, batch)
        return out, attrs, params
    if op == "linear":
        if lay.holds_batch(x, len(x) - 1):
            raise _Refuse("a linear map over the batch axis mixes samples")
        last = tuple(a for a in x[-1] if a.batch) + lay.fresh(out_shape[-1])
        return lay.with_batch_first((*x[:-1], last), batch), attrs, params
    if op == "reshape":
        try:
            out = lay.reshape_layout(x, out_shape, batch)
        except lay.Misfit as exc:
            raise _Refuse(str(exc)) from exc
        out = lay.settle_batch_of_one(out) if batch == 1 else out
        attrs["shape"] = lay.canonical_shape(out, batch)
        return out, attrs, params
    if op == "permute":
        perm = attrs["perm"]
        out = tuple(x[p] for p in perm)
        kept_in, kept_out = lay.kept_axes(x), lay.kept_axes(out)
        attrs["perm"] = (0, *(1 + kept_in.index(perm[j]) for j in kept_out))
        return out, attrs, params
    if op == "slice":
        out = list(x)
        axes = []
        for axis, index in zip(attrs["axes"], attrs["indices"]):
            axes.append(_axis(x, axis, "slicing"))
            out[axis] = tuple(a for a in x[axis] if a.batch) + lay.fresh(len(index))
        attrs["axes"] = tuple(axes)
        return tuple(out), attrs, params
    if op == "gather":
        axis = attrs["axis"]
        if lay.holds_batch(x, axis):
            return _flat_gather(x, attrs, params, batch)
        attrs["axis"] = _axis(x, axis, "indexing")
        index_shape = tuple(torch.as_tensor(attrs["indices"]).shape)
        out = (*x[:axis], *(lay.fresh(s) for s in index_shape), *x[axis + 1 :])
        return lay.with_batch_first(out, batch), attrs, params
    if op == "concat":
        axis = attrs["axis"]
        others = [tuple(ax for k, ax in enumerate(v) if k != axis) for v in ins]
        if len(ins) > 1:
            _same(others, batch, "concatenation")
        attrs["axis"] = _axis(x, axis, "concatenation")
        out = (*x[:axis], lay.fresh(out_shape[axis]), *x[axis + 1 :])
        for _, name in attrs.get("constants", ()):
            part = (*x[:axis], lay.fresh(params[name].shape[axis]), *x[axis + 1 :])
            params[name] = _constant(params[name], part, batch, keep_batch=True)
        return out, attrs, params
    if op in ("softmax", "log_softmax"):
        if attrs.get("coerce_2d") and not lay.is_identity(x):
            raise _Unknown()
        attrs["axis"] = _axis(x, attrs["axis"], "a softmax")
        return x, attrs, params
    if op == "mean":
        axes = [_axis(x, a, "a mean") for a in attrs["axes"]]
        out = list(x)
        for a in attrs["axes"]:
            out[a] = tuple(atom for atom in x[a] if atom.batch)
        if not attrs.get("keepdims", True):
            out = [ax for k, ax in enumerate(out) if k not in attrs["axes"]]
        attrs["axes"] = tuple(axes)
        return lay.with_batch_first(tuple(out), batch), attrs, params
    if op == "layernorm":
        rank = len(x)
        trailing = [rank + a for a in attrs["axes"]]
        kept = [a for a in trailing if a in lay.kept_axes(x)]
        for axis in trailing:  # a batch of one alone on a normalized axis is not kept: it changes nothing
            if lay.holds_batch(x, axis):
                raise _Refuse("a normalization along the batch axis mixes samples")
        canon_rank = len(lay.canonical_shape(x, batch))
        if [lay.canonical_axis(x, a) for a in kept] != list(range(canon_rank - len(kept), canon_rank)):
            raise _Refuse("a normalization whose axes are not trailing once the batch is in front")
        attrs["axes"] = tuple(range(-len(kept), 0))
        shape = tuple(math.prod(a.size for a in x[i] if not a.batch) for i in kept)
        for key in ("weight", "bias"):
            if key in params:
                params[key] = params[key].reshape(shape)
        return x, attrs, params
    if op == "expand":
        rank_gap = len(out_shape) - len(x)
        padded = ((),) * rank_gap + tuple(x)
        out = tuple(
            ax if lay.sizes((ax,))[0] == size else tuple(a for a in ax if a.batch) + lay.fresh(size)
            for ax, size in zip(padded, out_shape)
        )
        if any(
            lay.holds_batch(padded, k) and lay.sizes((padded[k],))[0] != out_shape[k] for k in range(len(out))
        ):
            raise _Refuse("broadcasting the batch axis")
        attrs["shape"] = lay.canonical_shape(out, batch)
        return out, attrs, params
    if op == "roll":
        dims = [_axis(x, d, "rolling") for d in attrs["dims"]]
        out = list(x)
        for d in attrs["dims"]:
            out[d] = tuple(a for a in x[d] if a.batch) + lay.fresh(lay.sizes((x[d],))[0])
        attrs["dims"] = tuple(dims)
        return tuple(out), attrs, params
    if op == "matmul":
        a, b = ins
        for layout in (a, b):
            for axis in (len(layout) - 2, len(layout) - 1):
                if lay.holds_batch(layout, axis):
                    raise _Refuse("a matrix product over the batch axis mixes samples")
        if len(a) != len(b):
            raise _Refuse("a matrix product that broadcasts values whose batch axis moved")
        _same([a[:-2], b[:-2]], batch, "a matrix product")
        out = (*a[:-2], tuple(t for t in a[-2]), tuple(t for t in b[-1] if not t.batch))
        return lay.with_batch_first(out, batch), attrs, params
    if op == "einsum" and all(lay.is_identity(v) for v in ins):
        operands, result = attrs["equation"].split("->")
        letters = {term[:1] for term in operands.split(",")}
        if len(letters) != 1 or result[:1] not in letters or "." in attrs["equation"]:
            raise _Refuse("an einsum that does not keep the first axis of every operand as the batch")
        return lay.identity(out_shape, batch), attrs, params
    raise _Unknown()


def _flat_gather(x: lay.Layout, attrs: dict, params: dict, batch: int) -> tuple:
    """A gather from an axis that merges the batch (major) with other dims, whose indices keep every sample in its
    own block, the same way for each (dynamo's ``as_strided`` over a flattened tensor): a gather within the sample."""
    axis = attrs["axis"]
    atoms = x[axis]
    rest = math.prod(a.size for a in atoms[1:])
    index = torch.as_tensor(attrs["indices"])
    if not atoms[0].batch or rest == 1 or index.dim() == 0 or index.shape[0] != batch:
        raise _Refuse("indexing along the batch axis mixes samples")
    blocks = torch.arange(batch).reshape((batch,) + (1,) * (index.dim() - 1))
    local = index - blocks * rest
    if bool(((index // rest) != blocks).any()) or bool((local != local[:1]).any()):
        raise _Refuse("indexing along the batch axis mixes samples")
    attrs["axis"] = lay.canonical_axis(x, axis)
    attrs["indices"] = local[0].tolist()
    out = (*x[:axis], (atoms[0],), *(lay.fresh(s) for s in index.shape[1:]), *x[axis + 1 :])
    return out, attrs, params


HANDLED = ELEMENTWISE | {
    "linear",
    "reshape",
    "permute",
    "slice",
    "gather",
    "concat",
    "softmax",
    "log_softmax",
    "mean",
    "layernorm",
    "expand",
    "roll",
    "matmul",
    "einsum",
}


def batch_first(graph: Graph) -> Graph:
    """Every value with its batch alone on axis 0 (module docstring)."""
    sizes = {graph.shapes[name][0] for name in graph.inputs if graph.shapes.get(name)}
    if len(sizes) != 1:
        return graph
    (batch,) = sizes
    layouts: dict[str, lay.Layout] = {name: lay.identity(graph.shapes[name], batch) for name in graph.inputs}
    renamed: dict[str, str] = {}
    graph = clone(graph)
    nodes: list[Node] = []
    for node in graph.nodes:
        ins = [layouts[name] for name in node.inputs]
        out_shape = tuple(graph.shapes[node.output])
        plain = all(lay.is_identity(x) for x in ins)
        if plain and (node.op in ELEMENTWISE or node.op not in HANDLED):
            if not out_shape or out_shape[0] != batch:
                _refuse(graph, node, f"it turns the batch axis of size {batch} into {list(out_shape)}")
            layouts[node.output] = lay.identity(out_shape, batch)
            nodes.append(node)
            continue
        try:
            out, attrs, params = _handle(node, ins, out_shape, batch)
        except _Refuse as exc:
            _refuse(graph, node, str(exc))
        except _Unknown:
            _refuse(
                graph, node, "lrpaudit cannot follow the batch axis through this op (it is not axis 0 here)"
            )
        except (
            KeyError,
            IndexError,
            ValueError,
            RuntimeError,
        ) as exc:  # attrs the layout rules do not expect
            _refuse(graph, node, f"lrpaudit cannot follow the batch axis through it ({type(exc).__name__})")
        if batch == 1:
            out = lay.settle_batch_of_one(out)
        if lay.batch_place(out) is None:
            _refuse(graph, node, "its output has lost the batch axis")
        layouts[node.output] = out
        name = node.output if lay.is_identity(out) else node.output + SUFFIX
        if name != node.output:
            renamed[node.output] = name
        node.inputs = [renamed.get(v, v) for v in node.inputs]
        node.attrs, node.params = attrs, params
        nodes += _rewritten(graph, node, name, lay.canonical_shape(out, batch), batch)
    for name in graph.outputs:
        layout = layouts.get(name)
        if layout is not None and not lay.is_identity(layout):
            place = lay.batch_place(layout)
            where = "merged with other dimensions" if len(layout[place]) > 1 else "not first"
            raise UnsupportedOpError(
                f"{graph.source.get('path', 'model')}: output {name!r} of shape {list(lay.sizes(layout))} has "
                f"its batch (size {batch}) on axis {place}, {where}; lrpaudit audits models whose outputs have "
                "the batch alone on axis 0"
            )
    graph.nodes = nodes
    return graph


def _rewritten(graph: Graph, node: Node, name: str, expected: tuple[int, ...], batch: int) -> list[Node]:
    """The rewritten node writing ``name``, its shape checked (``ops.infer_shape``). With a batch of one the batch
    atom may end up as an extra leading axis of size 1 (an op dropped the axis it sat in): a reshape then gives the
    canonical form."""
    params = {k: tuple(t.shape) for k, t in node.params.items()}
    try:
        actual = infer_shape(node.op, [graph.shapes[v] for v in node.inputs], node.attrs, params)
    except ShapeError as exc:
        _refuse(graph, node, f"internal: its batch-first form does not fit its inputs ({exc})")
    graph.shapes[name] = expected
    if actual == expected:
        node.outputs = [name]
        return [node]
    if batch != 1 or math.prod(actual) != math.prod(expected):
        _refuse(
            graph, node, f"internal: its batch-first form gives {list(actual)}, expected {list(expected)}"
        )
    step = f"{name}::op"
    graph.shapes[step] = actual
    node.outputs = [step]
    origin = dict(node.origin, onnx_output=None, source_output=None)
    fix = Node(f"{node.id}:batch_first", "reshape", [step], [name], {"shape": expected}, {}, origin)
    return [node, fix]


def _refuse(graph: Graph, node: Node, why: str) -> Any:
    source = graph.source.get("path", "model")
    raise UnsupportedOpError(f"{source}: node {node.id!r} ({node.op}): {why}; the audit is per sample")
