"""Graph rewrites that turn raw frontend IR into canonical IR (each a pure function Graph -> Graph)."""

from __future__ import annotations

from ..ir import Graph
from .activations import fuse_gelu, fuse_gelu_tanh, fuse_silu
from .batch_axis import batch_first
from .batchnorm import fold_batchnorm
from .cleanup import remove_dead_nodes
from .concat import flatten_concats
from .fusions import fuse_linear_bias, mark_gates, split_infinite_masks
from .norms import fuse_layernorm, refuse_unfused
from .products import scalars_after_products
from .softmax import strip_output_softmax


def canonicalize(graph: Graph) -> Graph:
    """The standard pipeline every frontend's output goes through: every value batch first, the fusions; a
    canonical graph holds no ``FUSION_ONLY`` op."""
    graph = batch_first(graph)
    graph = split_infinite_masks(graph)
    graph = scalars_after_products(graph)
    graph = fuse_linear_bias(graph)
    graph = fold_batchnorm(graph)
    graph = fuse_gelu(graph)
    graph = fuse_gelu_tanh(graph)
    graph = fuse_silu(graph)
    graph = fuse_layernorm(graph)
    graph = flatten_concats(graph)
    graph = remove_dead_nodes(graph)
    graph = refuse_unfused(graph)
    graph = mark_gates(graph)
    return graph


__all__ = [
    "batch_first",
    "canonicalize",
    "flatten_concats",
    "fold_batchnorm",
    "fuse_gelu",
    "fuse_gelu_tanh",
    "fuse_layernorm",
    "fuse_linear_bias",
    "fuse_silu",
    "mark_gates",
    "refuse_unfused",
    "remove_dead_nodes",
    "scalars_after_products",
    "split_infinite_masks",
    "strip_output_softmax",
]
