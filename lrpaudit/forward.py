"""Forward execution of an IR graph in float32 or float64, keeping every activation for the LRP pass."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .errors import ModelError, first_line
from .ir import Graph, Node
from .ops import run_op


def cast_params(graph: Graph, dtype: torch.dtype, device: str | torch.device = "cpu") -> dict[str, dict]:
    """Node params in the execution dtype (floating tensors only; integer constants keep their type)."""
    cast: dict[str, dict] = {}
    for node in graph.nodes:
        cast[node.id] = {
            name: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
            for name, t in node.params.items()
        }
    return cast


def run_node(node: Node, values: Mapping[str, torch.Tensor], params: dict) -> torch.Tensor:
    """Run one node on already computed values."""
    try:
        return run_op(node.op, [values[name] for name in node.inputs], node.attrs, params)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelError(f"forward failed at node {node.id!r} ({node.op}): {first_line(exc)}") from exc


def run_forward(
    graph: Graph,
    feeds: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    params: dict[str, dict] | None = None,
) -> dict[str, torch.Tensor]:
    """Evaluate the graph; returns every value (graph inputs included) by name."""
    params = params if params is not None else cast_params(graph, dtype, device)
    values: dict[str, torch.Tensor] = {}
    for name in graph.inputs:
        if name not in feeds:
            raise ModelError(f"no value fed for graph input {name!r}")
        values[name] = feeds[name].to(device=device, dtype=dtype)
    with torch.no_grad():
        for node in graph.nodes:
            values[node.output] = run_node(node, values, params[node.id])
    return values
