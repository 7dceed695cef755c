"""Shared helpers for passes: copying graphs, rewiring values, dropping unused nodes."""

from __future__ import annotations

import copy

from ..ir import Graph, Node


def clone(graph: Graph) -> Graph:
    """A copy whose node list and nodes can be edited without touching the original (params are shared)."""
    nodes = [copy.copy(node) for node in graph.nodes]
    for node in nodes:
        node.inputs, node.outputs = list(node.inputs), list(node.outputs)
        node.attrs, node.params, node.origin = dict(node.attrs), dict(node.params), dict(node.origin)
    return Graph(
        inputs=list(graph.inputs),
        outputs=list(graph.outputs),
        nodes=nodes,
        shapes=dict(graph.shapes),
        input_dtypes=dict(graph.input_dtypes),
        notes=list(graph.notes),
        source=dict(graph.source),
        token_inputs=list(graph.token_inputs),
    )


def merge_origin(into: Node, other: Node) -> None:
    """Record that ``other`` was fused into ``into``."""
    into.origin["ops"] = list(into.origin.get("ops", [])) + list(other.origin.get("ops", []))
    into.origin["names"] = list(into.origin.get("names", [])) + list(other.origin.get("names", []))
    for key in ("onnx_output", "source_output"):
        if key in other.origin:
            into.origin[key] = other.origin[key]


def single_consumer(graph: Graph, value: str) -> Node | None:
    """The only node reading ``value``, or None if there are zero or several readers or it is a graph output."""
    if value in graph.outputs:
        return None
    readers = [node for node in graph.nodes if value in node.inputs]
    return readers[0] if len(readers) == 1 else None


def absorb_successor(graph: Graph, node: Node, successor: Node) -> None:
    """Make ``node`` produce ``successor``'s output and drop ``successor`` (which read only ``node``)."""
    node.outputs = list(successor.outputs)
    merge_origin(node, successor)
    graph.nodes.remove(successor)


def remove_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output."""
    graph = clone(graph)
    needed = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(out in needed for out in node.outputs):
            kept.append(node)
            needed.update(node.inputs)
    graph.nodes = list(reversed(kept))
    return graph
