"""Stripping a trailing softmax so that LRP explains logits (recorded in ``graph.notes``, never silent)."""

from __future__ import annotations

from ..ir import Graph
from .cleanup import clone


def strip_output_softmax(graph: Graph) -> Graph:
    """Remove Softmax/LogSoftmax nodes that produce a graph output; the logits become the output."""
    graph = clone(graph)
    producers = graph.producers()
    for index, name in enumerate(list(graph.outputs)):
        node = producers.get(name)
        if node is None or node.op not in ("softmax", "log_softmax"):
            continue
        if any(name in other.inputs for other in graph.nodes):
            continue
        graph.outputs[index] = node.inputs[0]
        graph.nodes.remove(node)
        graph.notes.append(
            f"stripped trailing {node.op} {node.id!r}: explaining the logits {node.inputs[0]!r}"
        )
    return graph
