"""Shared helpers for passes: copying graphs, rewiring values, dropping unused nodes."""

from __future__ import annotations

from ..ir import Graph, Node


def clone(graph: Graph) -> Graph:
    """A copy whose node list and nodes can be edited without touching the original (params are shared)."""
    nodes = [_copy(node) for node in graph.nodes]
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


def _copy(node: Node) -> Node:
    """A shallow copy (``copy.copy`` goes through ``__reduce_ex__``: the slowest part of a pass on long graphs)."""
    new = object.__new__(type(node))
    new.__dict__.update(node.__dict__)
    return new


def merge_origin(into: Node, other: Node) -> None:
    """Record that ``other`` was fused into ``into``."""
    into.origin["ops"] = list(into.origin.get("ops", [])) + list(other.origin.get("ops", []))
    into.origin["names"] = list(into.origin.get("names", [])) + list(other.origin.get("names", []))
    for key in ("onnx_output", "source_output"):
        if key in other.origin:
            into.origin[key] = other.origin[key]


class Rewrite:
    """An index of who reads each value, kept current while a pass absorbs or removes nodes.

    Passes look up readers here instead of scanning ``graph.nodes`` (which made each lookup O(nodes) and a pass
    over a long chain quadratic); nodes are compared by identity, and the node list is rebuilt once in
    :meth:`finish`.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.outputs = set(graph.outputs)
        self.readers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for name in dict.fromkeys(node.inputs):
                self.readers.setdefault(name, []).append(node)
        self.removed: set[int] = set()
        self.replacements: dict[int, Node] = {}

    def alive(self, node: Node) -> bool:
        return id(node) not in self.removed

    def single_consumer(self, value: str) -> Node | None:
        """The only live node reading ``value``; None for zero or several readers, or for a graph output."""
        if value in self.outputs:
            return None
        readers = [node for node in self.readers.get(value, ()) if id(node) not in self.removed]
        return readers[0] if len(readers) == 1 else None

    def absorb(self, node: Node, successor: Node) -> None:
        """Make ``node`` produce ``successor``'s output and drop ``successor`` (which read only ``node``)."""
        node.outputs = list(successor.outputs)
        merge_origin(node, successor)
        self.remove(successor)

    def remove(self, node: Node) -> None:
        self.removed.add(id(node))

    def replace(self, old: Node, new: Node) -> None:
        """Put ``new`` where ``old`` stands (``new`` reads values that already have readers indexed)."""
        self.replacements[id(old)] = new
        for name in dict.fromkeys(new.inputs):
            self.readers.setdefault(name, []).append(new)
        self.remove(old)

    def finish(self) -> Graph:
        """The graph with the removed nodes dropped and replacements in place (one pass over the list)."""
        nodes = []
        for node in self.graph.nodes:
            key = id(node)
            if key in self.replacements:
                nodes.append(self.replacements[key])
            elif key not in self.removed:
                nodes.append(node)
        self.graph.nodes = nodes
        return self.graph


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
