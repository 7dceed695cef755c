"""Graph rewrites that turn raw frontend IR into canonical IR (each a pure function Graph -> Graph)."""

from __future__ import annotations

from ..ir import Graph
from .batchnorm import fold_batchnorm
from .cleanup import remove_dead_nodes
from .concat import flatten_concats
from .fusions import fuse_gelu, fuse_linear_bias, mark_gates
from .softmax import strip_output_softmax


def canonicalize(graph: Graph) -> Graph:
    """The standard pipeline every frontend's output goes through."""
    graph = fuse_linear_bias(graph)
    graph = fold_batchnorm(graph)
    graph = fuse_gelu(graph)
    graph = flatten_concats(graph)
    graph = remove_dead_nodes(graph)
    graph = mark_gates(graph)
    return graph


__all__ = [
    "canonicalize",
    "flatten_concats",
    "fold_batchnorm",
    "fuse_gelu",
    "fuse_linear_bias",
    "mark_gates",
    "remove_dead_nodes",
    "strip_output_softmax",
]
