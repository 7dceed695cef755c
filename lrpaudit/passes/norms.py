"""Fusing decomposed normalizations into one ``layernorm`` node, and refusing the steps no pattern took.

Older exporters (ONNX opset < 17, hand-written modules such as T5's or LLaMA's RMSNorm) write a normalization as
elementwise steps. The patterns, over the axes ``A`` of the two means (the same in both):

* LayerNorm: ``d = x - mean_A(x)``, ``v = mean_A(d ** 2)`` (or ``d * d``), then ``d / sqrt(v + eps)``,
  ``d * rsqrt(v + eps)`` or ``d * (1 / sqrt(v + eps))``;
* RMSNorm: the same with ``d = x`` (no centring);

each optionally followed by ``* gamma`` and ``+ beta`` that vary along ``A`` only (the affine weight and bias).
Every intermediate value must feed only the next step. Axes that are not the trailing ones are moved there and
back with ``permute`` nodes (``layernorm`` normalizes trailing axes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UnsupportedOpError
from ..ir import FUSION_ONLY, Graph, Node
from .cleanup import clone


@dataclass
class _Match:
    """One decomposed normalization: its input, axes, eps, the nodes it replaces and the affine parts."""

    x: str
    axes: tuple[int, ...]  # positive axes of the input
    eps: float
    center: bool
    nodes: list[Node]
    last: Node
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def _mean_axes(node: Node | None, rank: int) -> tuple[int, ...] | None:
    """The axes a keepdims mean reduces (``mean`` or ``global_avgpool``), else None."""
    if node is None or not node.attrs.get("keepdims", True):
        return None
    if node.op == "mean":
        return tuple(sorted(node.attrs["axes"]))
    if node.op == "global_avgpool":
        return tuple(range(2, rank))
    return None


def _scalar(node: Node, op: str) -> float | None:
    const = node.params.get("const")
    if node.op != op or const is None or const.numel() != 1:
        return None
    return float(const.reshape(-1)[0])


def _is_square_of(node: Node | None) -> str | None:
    """The value this node squares (``pow`` 2 or ``mul(d, d)``), else None."""
    if node is None:
        return None
    if node.op == "pow" and float(node.attrs["exponent"]) == 2.0:
        return node.inputs[0]
    if node.op == "mul" and node.inputs[0] == node.inputs[1]:
        return node.inputs[0]
    return None


class _Finder:
    """Producer and consumer lookups over one graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()

    def only_reader(self, value: str) -> Node | None:
        """The single node reading ``value`` (it may read it twice), if the value is no graph output."""
        readers = {id(n): n for n in self.consumers.get(value, [])}
        if value in self.graph.outputs or len(readers) != 1:
            return None
        return next(iter(readers.values()))

    def readers(self, value: str) -> list[Node]:
        return list({id(n): n for n in self.consumers.get(value, [])}.values())


def _division(find: _Finder, std_in: Node) -> tuple[list[Node], Node, str] | None:
    """From the node after ``v + eps``: the steps up to ``num / sigma``, that final node and its numerator."""
    chain: list[Node] = [std_in]
    if std_in.op == "sqrt":
        after = find.only_reader(std_in.output)
        if after is not None and after.op == "div" and after.inputs[1] == std_in.output:
            return [std_in, after], after, after.inputs[0]
        if after is None or after.op != "reciprocal":
            return None
        chain.append(after)
    elif std_in.op != "rsqrt":
        return None
    inverse = chain[-1].output
    product = find.only_reader(inverse)
    if product is None or product.op != "mul" or inverse not in product.inputs:
        return None
    numerator = product.inputs[0] if product.inputs[1] == inverse else product.inputs[1]
    return [*chain, product], product, numerator


def _centring(find: _Finder, value: str, rank: int, axes: tuple[int, ...]) -> tuple[Node, Node] | None:
    """``value = x - mean_axes(x)``: (the subtraction, the mean), else None."""
    sub = find.producers.get(value)
    if sub is None or sub.op != "add" or sub.attrs.get("coeffs") != [1.0, -1.0]:
        return None
    mean = find.producers.get(sub.inputs[1])
    if _mean_axes(mean, rank) != axes or mean.inputs[0] != sub.inputs[0]:
        return None
    return sub, mean


def _match(find: _Finder, variance: Node) -> _Match | None:
    """The normalization whose variance mean is ``variance``, or None."""
    square = find.producers.get(variance.inputs[0])
    d = _is_square_of(square)
    if d is None or find.only_reader(square.output) is not variance:
        return None
    rank = len(find.graph.shapes.get(d, ()))
    axes = _mean_axes(variance, rank)
    if not axes:
        return None
    step = find.only_reader(variance.output)
    if step is None:
        return None
    eps, nodes = 0.0, [square, variance]
    if step.op == "add_const":
        eps = _scalar(step, "add_const")
        if eps is None:
            return None
        nodes.append(step)
        step = find.only_reader(step.output)
        if step is None:
            return None
    division = _division(find, step)
    if division is None:
        return None
    steps, last, numerator = division
    nodes += steps
    if numerator == d:
        centring = _centring(find, d, rank, axes)
        subs = [centring[0]] if centring else []
    else:  # ``x - mean`` computed twice (a trace records each use): both must be that same centring
        first, second = _centring(find, d, rank, axes), _centring(find, numerator, rank, axes)
        if first is None or second is None or first[1] is not second[1]:
            return None
        centring, subs = first, [first[0], second[0]]
    if centring is not None:
        mean = centring[1]
        readers_ok = all(find.readers(sub.output) == [r] for sub, r in zip(subs, [square, last][: len(subs)]))
        if len(subs) == 1:
            readers_ok = {id(n) for n in find.readers(d)} == {id(square), id(last)}
        if readers_ok and {id(n) for n in find.readers(mean.output)} <= {id(sub) for sub in subs}:
            return _Match(centring[0].inputs[0], axes, eps, True, [mean, *subs, *nodes], last)
    if numerator != d:
        return None
    return _Match(d, axes, eps, False, nodes, last)


def _affine(const: torch.Tensor, shape: tuple[int, ...], axes: tuple[int, ...]) -> torch.Tensor | None:
    """A constant that varies along ``axes`` only, as a tensor of the normalized dims' shape; else None."""
    rank = len(shape)
    if const.dim() > rank:
        return None
    full = const.reshape((1,) * (rank - const.dim()) + tuple(const.shape))
    if any(full.shape[i] != 1 for i in range(rank) if i not in axes):
        return None
    if any(full.shape[i] not in (1, shape[i]) for i in axes):
        return None
    normalized = tuple(shape[i] for i in axes)
    return full.reshape(tuple(full.shape[i] for i in axes)).expand(normalized).clone()


def _take_affine(find: _Finder, match: _Match) -> None:
    """Absorb a following ``* gamma`` and then ``+ beta`` that fit the normalized dims."""
    shape = find.graph.shapes[match.x]
    for op, slot in (("mul_const", "weight"), ("add_const", "bias")):
        after = find.only_reader(match.last.output)
        if after is None or after.op != op:
            if op == "mul_const":
                continue
            return
        tensor = _affine(after.params["const"].to(torch.float64), shape, match.axes)
        if tensor is None:
            return
        setattr(match, slot, tensor)
        match.nodes.append(after)
        match.last = after


def _replacement(graph: Graph, match: _Match) -> list[Node]:
    """The ``layernorm`` node (with permutes around it when the axes are not the trailing ones)."""
    rank = len(graph.shapes[match.x])
    origin = dict(match.last.origin)
    origin["ops"] = [op for node in match.nodes for op in node.origin.get("ops", [])]
    origin["pattern"] = "LayerNorm" if match.center else "RMSNorm"
    params = {k: v for k, v in (("weight", match.weight), ("bias", match.bias)) if v is not None}
    attrs = {"axes": tuple(range(-len(match.axes), 0)), "eps": match.eps, "center": match.center}
    out = match.last.output
    if match.axes == tuple(range(rank - len(match.axes), rank)):
        return [Node(match.last.id, "layernorm", [match.x], [out], attrs, params, origin)]
    kept = [i for i in range(rank) if i not in match.axes]
    perm = tuple(kept + list(match.axes))
    inverse = tuple(perm.index(i) for i in range(rank))
    moved, normed = f"{out}::to_last", f"{out}::normalized"
    shape = graph.shapes[match.x]
    graph.shapes[moved] = graph.shapes[normed] = tuple(shape[i] for i in perm)
    helper = dict(origin, onnx_output=None, source_output=None)
    return [
        Node(f"{match.last.id}:to_last", "permute", [match.x], [moved], {"perm": perm}, {}, helper),
        Node(f"{match.last.id}:norm", "layernorm", [moved], [normed], attrs, params, helper),
        Node(match.last.id, "permute", [normed], [out], {"perm": inverse}, {}, origin),
    ]


def fuse_layernorm(graph: Graph) -> Graph:
    """Every decomposed LayerNorm / RMSNorm (module docstring) as one ``layernorm`` node."""
    graph = clone(graph)
    fused: set[int] = set()  # nodes already taken by a fused pattern (by identity)
    for variance in [n for n in graph.nodes if n.op in ("mean", "global_avgpool")]:
        if id(variance) in fused:
            continue
        find = _Finder(graph)
        match = _match(find, variance)
        if match is None:
            continue
        _take_affine(find, match)
        position = graph.nodes.index(match.last)
        graph.nodes[position : position + 1] = _replacement(graph, match)
        fused.update(id(node) for node in match.nodes)
        taken = {id(node) for node in match.nodes if node is not match.last}
        graph.nodes = [node for node in graph.nodes if id(node) not in taken]
    return graph


def refuse_unfused(graph: Graph) -> Graph:
    """A step of a decomposition that no pattern took (``ir.FUSION_ONLY``) has no LRP rule: refuse it by name."""
    for node in graph.nodes:
        if node.op in FUSION_ONLY:
            source = graph.source.get("path", "model")
            origin = "+".join(node.origin.get("ops", [])) or node.op
            if "opset" in node.origin:
                origin += f", opset {node.origin['opset']}"
            raise UnsupportedOpError(
                f"{source}: node {node.id!r} ({origin}): {node.op} of an activation is not part of a pattern "
                "lrpaudit recognizes (a decomposed LayerNorm/RMSNorm or GELU), and has no LRP rule of its own"
            )
    return graph
