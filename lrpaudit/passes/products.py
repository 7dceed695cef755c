"""Scalar factors of a product of two activations moved behind it (``scalars_after_products``).

Exporters write the scaling of attention scores in different places: ``(q k^T) * s`` (Hugging Face eager code, the
expansion of a traced ``scaled_dot_product_attention``), or ``(q sqrt(s)) (k^T sqrt(s))`` (SDPA's decomposition in
both ONNX exporters). The function is the same, but a rule with a stabilizer on the product (``uniform``'s
``o + eps sign(o)``) sees ``o`` scaled by ``s`` in one file and not in the other, so two files of one model would
give different relevance. This pass writes every such product in the first form: ``matmul(mul_const(a, c1),
mul_const(b, c2))`` -> ``mul_const(matmul(a, b), c1 c2)`` for scalar constants whose value feeds only the product.
The product's output gets the suffix ``::unscaled`` (it is no tensor of the source model).
"""

from __future__ import annotations

import torch

from ..ir import Graph, Node
from .cleanup import Rewrite, clone

PRODUCTS = frozenset({"matmul", "einsum"})
SUFFIX = "::unscaled"


def _scalar_factor(rewrite: Rewrite, producers: dict[str, Node], value: str, product: Node) -> Node | None:
    """The ``mul_const`` by a scalar that produces ``value`` for ``product`` alone, else None."""
    node = producers.get(value)
    if node is None or node.op != "mul_const" or not rewrite.alive(node):
        return None
    if node.params["const"].numel() != 1 or rewrite.single_consumer(value) is not product:
        return None
    return node


def scalars_after_products(graph: Graph) -> Graph:
    """``matmul``/``einsum`` of scaled activations -> the product of the activations, then one ``mul_const``."""
    graph = clone(graph)
    rewrite = Rewrite(graph)
    producers = graph.producers()
    scales: dict[int, Node] = {}
    for node in graph.nodes:
        if node.op not in PRODUCTS:
            continue
        factors = [_scalar_factor(rewrite, producers, value, node) for value in node.inputs]
        found = [factor for factor in factors if factor is not None]
        if not found:
            continue
        const = torch.ones((), dtype=torch.float64)
        for position, factor in enumerate(factors):
            if factor is not None:
                const = const * factor.params["const"].to(torch.float64).reshape(())
                node.inputs[position] = factor.inputs[0]
                rewrite.remove(factor)
        output = node.output
        scale = Node(f"{node.id}:scale", "mul_const", [f"{output}{SUFFIX}"], [output], {}, {"const": const})
        scale.origin = dict(node.origin)
        node.outputs = [f"{output}{SUFFIX}"]
        node.origin = dict(node.origin, onnx_output=None, source_output=None)
        graph.shapes[node.output] = graph.shapes[output]
        scales[id(node)] = scale
    graph = rewrite.finish()
    nodes = []
    for node in graph.nodes:
        nodes.append(node)
        if id(node) in scales:
            nodes.append(scales[id(node)])
    graph.nodes = nodes
    return graph
