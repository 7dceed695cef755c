"""Pattern fusions: MatMul+Add -> linear with bias, and gate marking on ``mul`` (activation fusions are in
``activations``, normalization fusions in ``norms``)."""

from __future__ import annotations

import math

import torch

from ..ir import WEIGHTED, Graph, Node
from .cleanup import Rewrite, clone

# Ops whose output is a bounded "gate" value: in x * gate, the gate is treated as a constant by LRP.
GATE_OPS = frozenset({"sigmoid", "hardsigmoid", "softmax", "tanh", "clip"})


def _channel_bias(node: Node, const: torch.Tensor, out_channels: int, rank: int) -> torch.Tensor | None:
    """The constant as a per-output-channel bias vector if it is one, else None: a scalar, or a constant whose
    channel axis (the last for ``linear``, 1 for convolutions) has the output's size and which is the same along
    every other axis (a bias that an earlier pass wrote out over the tokens, as ``batch_first`` does for the
    sequence-first projections of ``nn.MultiheadAttention``)."""
    if const.numel() == 1:
        return const.reshape(1).expand(out_channels).clone()
    if const.dim() > rank:
        return None
    shape = [1] * (rank - const.dim()) + list(const.shape)
    axis = rank - 1 if node.op == "linear" else 1
    if shape[axis] != out_channels:
        return None
    rows = const.reshape(shape).movedim(axis, -1).reshape(-1, out_channels)
    if not bool((rows == rows[:1]).all()):
        return None
    return rows[0].clone()


def fuse_linear_bias(graph: Graph) -> Graph:
    """``linear``/``conv`` followed by ``add_const`` that is a per-channel bias becomes one node with that bias."""
    graph = clone(graph)
    rewrite = Rewrite(graph)
    for node in graph.nodes:
        if node.op not in WEIGHTED or not rewrite.alive(node):
            continue
        successor = rewrite.single_consumer(node.output)
        if successor is None or successor.op != "add_const":
            continue
        weight = node.params["weight"]
        out_channels = (
            weight.shape[0] if node.op != "conv_transpose" else weight.shape[1] * node.attrs["groups"]
        )
        rank = len(graph.shapes[node.output])
        bias = _channel_bias(node, successor.params["const"], out_channels, rank)
        if bias is None:
            continue
        existing = node.params.get("bias")
        node.params["bias"] = bias.to(torch.float64) + (0 if existing is None else existing)
        rewrite.absorb(node, successor)
    return rewrite.finish()


def _gate_source(name: str, producers: dict[str, Node]) -> Node | None:
    """The node that produced ``name``, looking through reshapes/permutes (``sigmoid(..).view(b, c, 1, 1)``)."""
    node = producers.get(name)
    while node is not None and node.op in ("reshape", "permute"):
        node = producers.get(node.inputs[0])
    return node


def mark_gates(graph: Graph) -> Graph:
    """For each ``mul`` of two activations, record which input is the gate (``attrs['gate']``: 0, 1 or None).

    The gate is the input produced by a bounded activation (sigmoid, hardsigmoid, ...), possibly reshaped, when
    exactly one input is; when both are (a squeeze-excitation gate on ReLU6 features), the one that is broadcast
    over the other (per channel, fewer elements than the product) is the gate.
    """
    graph = clone(graph)
    producers = graph.producers()
    for node in graph.nodes:
        if node.op != "mul":
            continue
        sources = [_gate_source(name, producers) for name in node.inputs]
        gated = [i for i, source in enumerate(sources) if source is not None and source.op in GATE_OPS]
        if len(gated) > 1:
            sizes = [math.prod(graph.shapes.get(name, ())) for name in node.inputs]
            product = math.prod(graph.shapes.get(node.output, ()))
            gated = [i for i in gated if sizes[i] < product]
        node.attrs["gate"] = gated[0] if len(gated) == 1 else None
    return graph


def split_infinite_masks(graph: Graph) -> Graph:
    """``x + c`` where ``c`` holds ``-inf`` (an additive attention mask) -> ``where(c > -inf, x + c', -inf)`` with
    ``c'`` = c, 0 where masked (no add when that is all 0): the same function (``x - inf = -inf``), but the masked
    positions are selected out instead of being a bias of ``-inf``, which no rule can give a finite share."""
    graph = clone(graph)
    for node in list(graph.nodes):
        const = node.params.get("const")
        if node.op != "add_const" or const is None or not bool(torch.isneginf(const).any()):
            continue
        allowed = ~torch.isneginf(const)
        finite = torch.where(allowed, const, torch.zeros_like(const))
        params = {"cond": allowed, "other": torch.tensor(float("-inf"), dtype=torch.float64)}
        mask = Node(node.id, "where", list(node.inputs), list(node.outputs), {"input_when": True}, params)
        mask.origin = dict(node.origin)
        position = graph.nodes.index(node)
        if not bool(finite.any()):
            graph.nodes[position] = mask
            continue
        shifted = f"{node.output}::finite"
        graph.shapes[shifted] = graph.shapes[node.output]
        node.params, node.outputs = {"const": finite}, [shifted]
        node.origin = dict(node.origin, onnx_output=None, source_output=None)
        mask.id, mask.inputs = f"{node.id}:mask", [shifted]
        graph.nodes.insert(position + 1, mask)
    return graph
