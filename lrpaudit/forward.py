"""Forward execution of an IR graph in float32 or float64, keeping every activation for the LRP pass."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .errors import InputError, ModelError, first_line
from .ir import Graph, Node
from .ops import run_op


def cast_params(graph: Graph, dtype: torch.dtype, device: str | torch.device = "cpu") -> dict[str, dict]:
    """Node params in the execution dtype (floating tensors only; integer constants keep their type).

    A param already in that dtype (a float32 file's weights in a float32 audit) is used as it is, not copied.
    """
    cast: dict[str, dict] = {}
    for node in graph.nodes:
        cast[node.id] = {
            name: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
            for name, t in node.params.items()
        }
    return cast


def embed_inputs(
    graph: Graph, feeds: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None, first_index: int = 0
) -> dict[str, torch.Tensor]:
    """The graph's feeds from the model's: token ids replaced by their embeddings (the prologue, ``ir.TokenInput``).

    Float inputs pass unchanged; each lookup reads ``table[ids.reshape(index_shape)]`` in ``dtype`` (default: the
    dtype of the other inputs, else float64). An id outside ``0 .. rows - 1`` is an InputError naming it and its
    sample (numbered from ``first_index``).
    """
    if not graph.token_inputs:
        return dict(feeds)
    raw = {token.name for token in graph.token_inputs}
    out = {name: value for name, value in feeds.items() if name not in raw}
    if dtype is None:
        dtype = next((v.dtype for v in out.values() if v.is_floating_point()), torch.float64)
    for token in graph.token_inputs:
        if token.name not in feeds:
            raise ModelError(f"no value fed for the token input {token.name!r}")
        ids = feeds[token.name]
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise InputError(f"input {token.name!r} takes integer token ids, got {ids.dtype}")
        ids = ids.to(torch.long)
        bad = (ids < 0) | (ids >= token.vocab)
        if bool(bad.any()):
            sample = first_index + int(bad.reshape(ids.shape[0], -1).any(dim=1).nonzero()[0])
            value = int(ids[bad][0])
            raise InputError(
                f"input {token.name!r}: token id {value} (sample {sample}) is outside 0..{token.vocab - 1}, "
                "the rows of the embedding table"
            )
        table = token.table.to(device=ids.device, dtype=dtype)
        out[token.embedded] = table[ids.reshape(token.index_shape)]
    return out


def token_relevance(graph: Graph, relevance: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Input relevance by model input: for token ids, per token (the sum over the embedding dimension, summed
    over the lookups of the same ids), in the ids' shape; float inputs unchanged."""
    embedded = {token.embedded for token in graph.token_inputs}
    out = {name: value for name, value in relevance.items() if name not in embedded}
    for token in graph.token_inputs:
        per_token = relevance[token.embedded].sum(dim=-1)
        shape = graph.shapes.get(token.name) or per_token.shape
        per_token = per_token.reshape(shape)
        out[token.name] = out[token.name] + per_token if token.name in out else per_token
    return out


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
    """Evaluate the graph; returns every value (graph inputs included) by name.

    Each value must have the shape the graph was built with (``ops.infer_shape``): one that differs is a fault of
    lrpaudit's shape functions, an internal error, never a silently different graph.
    """
    params = params if params is not None else cast_params(graph, dtype, device)
    values: dict[str, torch.Tensor] = {}
    for name in graph.inputs:
        if name not in feeds:
            raise ModelError(f"no value fed for graph input {name!r}")
        values[name] = feeds[name].to(device=device, dtype=dtype)
    with torch.no_grad():
        for node in graph.nodes:
            value = values[node.output] = run_node(node, values, params[node.id])
            expected = graph.shapes.get(node.output)
            if expected is not None and tuple(value.shape) != tuple(expected):
                raise RuntimeError(
                    f"internal: IR node {node.id!r} ({node.op}) computes shape {list(value.shape)}, but the graph "
                    f"was built with {list(expected)}"
                )
    return values
