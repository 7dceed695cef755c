"""Stripping a trailing softmax so that LRP explains logits (recorded in ``graph.notes``, never silent)."""

from __future__ import annotations

from ..ir import Graph
from .cleanup import Rewrite, clone


def strip_output_softmax(graph: Graph) -> Graph:
    """Remove Softmax/LogSoftmax nodes that produce a graph output; the logits become the output."""
    graph = clone(graph)
    producers = graph.producers()
    rewrite = Rewrite(graph)
    for index, name in enumerate(list(graph.outputs)):
        node = producers.get(name)
        if node is None or node.op not in ("softmax", "log_softmax") or not rewrite.alive(node):
            continue
        if any(rewrite.alive(reader) for reader in rewrite.readers.get(name, ())):
            continue
        graph.outputs[index] = node.inputs[0]
        rewrite.remove(node)
        graph.notes.append(
            f"stripped trailing {node.op} {node.id!r}: explaining the logits {node.inputs[0]!r}"
        )
    return rewrite.finish()
