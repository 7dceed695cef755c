"""Concatenations as one canonical shape: no single-input concat, no concat of a concat along the same axis.

Exporters write the same ``torch.cat`` calls differently: the legacy ONNX exporter flattens Inception's nested
``cat``s into one Concat and keeps a one-input Concat (DenseNet's first layer), the dynamo exporter keeps every
``cat``, TorchScript drops one-input ones. Routing relevance by position is the same either way; flattening makes
the canonical graphs (and so their node ids) of a model's ONNX and TorchScript twins the same.
"""

from __future__ import annotations

from ..ir import Graph
from .cleanup import clone


def flatten_concats(graph: Graph) -> Graph:
    """Drop one-input concats; inline a concat read only by a concat along the same axis (constant parts excluded)."""
    graph = clone(graph)
    plain = {n.output: n for n in graph.nodes if n.op == "concat" and not n.attrs.get("constants")}
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    renamed: dict[str, str] = {}
    removed = set()
    for node in graph.nodes:
        node.inputs = [renamed.get(name, name) for name in node.inputs]
        if node.output not in plain:
            continue
        if len(node.inputs) == 1:
            renamed[node.output] = node.inputs[0]
            removed.add(id(node))
            continue
        inputs = []
        for name in node.inputs:
            inner = plain.get(name)
            inlined = (
                inner is not None
                and id(inner) not in removed
                and inner.attrs["axis"] == node.attrs["axis"]
                and readers.get(name) == 1
                and name not in graph.outputs
            )
            if inlined:
                inputs.extend(inner.inputs)
                removed.add(id(inner))
            else:
                inputs.append(name)
        node.inputs = inputs
    graph.nodes = [node for node in graph.nodes if id(node) not in removed]
    graph.outputs = [renamed.get(name, name) for name in graph.outputs]
    return graph
