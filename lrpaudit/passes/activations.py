"""Fusing activations that exporters write as products: GELU (erf and tanh forms) and SiLU.

A product ``x * f(x)`` that is really an activation must not stay a general ``mul`` of two activations (which LRP
treats as a product of two factors): these passes turn the exporters' decompositions back into one node.

* erf-GELU: ``x * 0.5 * (1 + erf(x / sqrt 2))``;
* tanh-GELU (GPT-2's ``gelu_new``, ``F.gelu(approximate="tanh")`` before ONNX opset 20):
  ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))``, with ``x ** 3`` as ``pow`` or ``x * (x * x)``;
* SiLU: ``x * sigmoid(x)``;

in the orderings exporters use (the 0.5 on ``x``, on the gate or on the product).
"""

from __future__ import annotations

import math

from ..ir import Graph, Node
from .cleanup import Rewrite, clone

_KAPPA = 0.044715
_BETA = math.sqrt(2.0 / math.pi)


def _const_value(node: Node | None, op: str = "mul_const") -> float | None:
    if node is None or node.op != op:
        return None
    const = node.params.get("const")
    return float(const.reshape(-1)[0]) if const is not None and const.numel() == 1 else None


def _near(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-6 * abs(target)


def _other(node: Node, value: str) -> str:
    return node.inputs[0] if node.inputs[1] == value else node.inputs[1]


class _Index:
    """Producers and single readers of the values of one graph, kept current while nodes are fused (a pass is then
    linear in the graph: no lookup scans the node list)."""

    def __init__(self, graph: Graph) -> None:
        self.rewrite = Rewrite(graph)
        self.producers = graph.producers()

    def producer(self, value: str) -> Node | None:
        node = self.producers.get(value)
        return node if node is not None and self.rewrite.alive(node) else None

    def single(self, value: str) -> Node | None:
        return self.rewrite.single_consumer(value)


def _product_tail(index: _Index, x: str, plus_one: Node) -> tuple[list[Node], Node] | None:
    """From ``1 + f(..)``: the nodes of ``0.5 * x * (1 + f)`` after it, and the node that produces the result."""
    single_consumer = index.single
    removed, gate, has_half = [], plus_one.output, False
    halved = single_consumer(gate)
    if halved is not None and _near(_const_value(halved), 0.5):
        removed, gate, has_half = [halved], halved.output, True
    product = single_consumer(gate)
    if product is None or product.op != "mul" or gate not in product.inputs:
        return None
    other = _other(product, gate)
    if other == x and not has_half:
        last = single_consumer(product.output)
        if not _near(_const_value(last), 0.5):
            return None
        return [*removed, product], last
    if other == x:
        return removed, product
    half_x = index.producer(other)
    if has_half or half_x is None or half_x.inputs[0] != x or not _near(_const_value(half_x), 0.5):
        return None
    if single_consumer(half_x.output) is product:
        removed.append(half_x)
    return removed, product


def _replace(
    index: _Index, final: Node, op: str, x: str, attrs: dict, removed: list[Node], pattern: str
) -> None:
    fused = Node(
        id=final.id,
        op=op,
        inputs=[x],
        outputs=list(final.outputs),
        attrs=attrs,
        origin=dict(final.origin) | {"ops": [pattern]},
    )
    index.rewrite.replace(final, fused)
    index.producers.update(dict.fromkeys(fused.outputs, fused))
    for node in removed:
        index.rewrite.remove(node)


def fuse_gelu(graph: Graph) -> Graph:
    """``x * 0.5 * (1 + erf(x / sqrt 2))`` (the exporters' GELU) -> one ``gelu`` node, in its usual orderings."""
    graph = clone(graph)
    index = _Index(graph)
    for erf in [n for n in graph.nodes if n.op == "erf"]:
        if not index.rewrite.alive(erf):
            continue
        scaled = index.producer(erf.inputs[0])
        if not _near(_const_value(scaled), 1 / math.sqrt(2)) or index.single(scaled.output) is not erf:
            continue
        plus_one = index.single(erf.output)
        if not _near(_const_value(plus_one, "add_const"), 1.0):
            continue
        tail = _product_tail(index, scaled.inputs[0], plus_one)
        if tail is not None:
            removed, final = tail
            _replace(
                index,
                final,
                "gelu",
                scaled.inputs[0],
                {"approximate": "none"},
                [scaled, erf, plus_one, *removed],
                "Erf-GELU pattern",
            )
    return index.rewrite.finish()


def _cube_of(index: _Index, node: Node | None) -> tuple[str, list[Node]] | None:
    """``x ** 3`` as ``pow(x, 3)``, ``x * (x * x)`` or ``(x * x) * x``: x and the nodes, each read only once."""
    if node is None:
        return None
    if node.op == "pow" and float(node.attrs["exponent"]) == 3.0:
        return node.inputs[0], [node]
    if node.op != "mul":
        return None
    for square_name, x in (node.inputs, node.inputs[::-1]):
        square = index.producer(square_name)
        if square is None or square.op != "mul" or square.inputs != [x, x] or square_name == x:
            continue
        if index.single(square.output) is node:
            return x, [square, node]
    return None


def fuse_gelu_tanh(graph: Graph) -> Graph:
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`` -> one ``gelu`` node (approximate ``tanh``)."""
    graph = clone(graph)
    index = _Index(graph)
    for tanh in [n for n in graph.nodes if n.op == "tanh"]:
        if not index.rewrite.alive(tanh):
            continue
        scaled = index.producer(tanh.inputs[0])
        if not _near(_const_value(scaled), _BETA) or index.single(scaled.output) is not tanh:
            continue
        inner = index.producer(scaled.inputs[0])
        if inner is None or inner.op != "add" or inner.attrs.get("coeffs") not in (None, [1.0, 1.0]):
            continue
        if index.single(inner.output) is not scaled:
            continue
        found = None
        for x, term in (inner.inputs, inner.inputs[::-1]):
            kappa = index.producer(term)
            if _near(_const_value(kappa), _KAPPA) and index.single(term) is inner:
                cube = _cube_of(index, index.producer(kappa.inputs[0]))
                if cube is not None and cube[0] == x and index.single(kappa.inputs[0]) is kappa:
                    found = x, [*cube[1], kappa]
        plus_one = index.single(tanh.output)
        if found is None or not _near(_const_value(plus_one, "add_const"), 1.0):
            continue
        x, steps = found
        tail = _product_tail(index, x, plus_one)
        if tail is not None:
            removed, final = tail
            nodes = [*steps, inner, scaled, tanh, plus_one, *removed]
            _replace(index, final, "gelu", x, {"approximate": "tanh"}, nodes, "Tanh-GELU pattern")
    return index.rewrite.finish()


def fuse_silu(graph: Graph) -> Graph:
    """``x * sigmoid(x)`` (SiLU / Swish, which ONNX before opset 24 has no op for) -> one ``silu`` node."""
    graph = clone(graph)
    index = _Index(graph)
    for sigmoid in [n for n in graph.nodes if n.op == "sigmoid"]:
        product = index.single(sigmoid.output)
        if product is None or product.op != "mul" or sigmoid.output not in product.inputs:
            continue
        if _other(product, sigmoid.output) == sigmoid.inputs[0]:
            _replace(index, product, "silu", sigmoid.inputs[0], {}, [sigmoid], "SiLU pattern")
    return index.rewrite.finish()
