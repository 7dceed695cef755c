"""Exact float64 folding of BatchNorm (IR ``affine`` from a BatchNorm) into the preceding linear-type node."""

from __future__ import annotations

import torch

from ..ir import WEIGHTED, Graph
from .cleanup import Rewrite, clone


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold every foldable BatchNorm; the rest stay ``affine`` (a diagonal linear layer with a bias).

    ``s = gamma / sqrt(var + eps)`` is already the affine weight, ``t`` its bias: ``W' = s W`` on the output-channel
    axis and ``b' = s b + t``. For grouped ``conv_transpose`` the weight is ``(C_in, C_out/g, k...)``, so it is
    viewed as ``(g, C_in/g, C_out/g, k...)`` and scaled on axis 2.
    """
    graph = clone(graph)
    rewrite = Rewrite(graph)
    for node in graph.nodes:
        if node.op not in WEIGHTED or not rewrite.alive(node):
            continue
        successor = rewrite.single_consumer(node.output)
        if successor is None or successor.op != "affine" or successor.attrs.get("source") != "batchnorm":
            continue
        if node.op == "linear" and len(graph.shapes.get(node.output, ())) != 2:
            continue  # BatchNorm1d over (N, C, L) normalizes axis 1, not the linear's feature axis
        scale = successor.params["weight"].to(torch.float64)
        shift = successor.params["bias"].to(torch.float64)
        weight = node.params["weight"].to(torch.float64)
        bias = node.params.get("bias")
        bias = torch.zeros_like(scale) if bias is None else bias.to(torch.float64)
        if node.op == "conv_transpose":
            groups = node.attrs["groups"]
            grouped = weight.reshape((groups, weight.shape[0] // groups) + tuple(weight.shape[1:]))
            grouped = grouped * scale.reshape((groups, 1, -1) + (1,) * (weight.dim() - 2))
            weight = grouped.reshape(weight.shape)
        else:
            weight = weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        node.params["weight"] = weight
        node.params["bias"] = bias * scale + shift
        rewrite.absorb(node, successor)
    return rewrite.finish()
