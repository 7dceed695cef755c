"""Pattern fusions: MatMul+Add -> linear with bias, the erf-GELU decomposition -> gelu, gate marking on mul."""

from __future__ import annotations

import math

import torch

from ..ir import WEIGHTED, Graph, Node
from .cleanup import absorb_successor, clone, single_consumer

# Ops whose output is a bounded "gate" value: in x * gate, the gate is treated as a constant by LRP.
GATE_OPS = frozenset({"sigmoid", "hardsigmoid", "softmax", "tanh", "clip"})


def _channel_bias(node: Node, const: torch.Tensor, out_channels: int, rank: int) -> torch.Tensor | None:
    """The constant as a per-output-channel bias vector if it broadcasts as one, else None."""
    if const.numel() == 1:
        return const.reshape(1).expand(out_channels).clone()
    if node.op == "linear":
        if const.dim() >= 1 and const.shape[-1] == out_channels and const.numel() == out_channels:
            return const.reshape(out_channels).clone()
        return None
    shape = list(const.shape)
    while len(shape) < rank:
        shape.insert(0, 1)
    if len(shape) == rank and shape[1] == out_channels and const.numel() == out_channels:
        return const.reshape(out_channels).clone()
    return None


def fuse_linear_bias(graph: Graph) -> Graph:
    """``linear``/``conv`` followed by ``add_const`` that is a per-channel bias becomes one node with that bias."""
    graph = clone(graph)
    for node in list(graph.nodes):
        if node.op not in WEIGHTED or node not in graph.nodes:
            continue
        successor = single_consumer(graph, node.output)
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
        absorb_successor(graph, node, successor)
    return graph


def _const_value(node: Node) -> float | None:
    const = node.params.get("const")
    return float(const.reshape(-1)[0]) if const is not None and const.numel() == 1 else None


def _near(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-6 * abs(target)


def fuse_gelu(graph: Graph) -> Graph:
    """``x * 0.5 * (1 + erf(x / sqrt 2))`` (the exporters' GELU) -> one ``gelu`` node, in its usual orderings."""
    graph = clone(graph)
    for erf in [n for n in graph.nodes if n.op == "erf"]:
        producers = graph.producers()
        scaled = producers.get(erf.inputs[0])
        if scaled is None or scaled.op != "mul_const" or not _near(_const_value(scaled), 1 / math.sqrt(2)):
            continue
        if single_consumer(graph, scaled.output) is not erf:
            continue
        x = scaled.inputs[0]
        plus_one = single_consumer(graph, erf.output)
        if plus_one is None or plus_one.op != "add_const" or not _near(_const_value(plus_one), 1.0):
            continue
        removed, gate, has_half = [scaled, erf, plus_one], plus_one.output, False
        halved = single_consumer(graph, gate)
        if halved is not None and halved.op == "mul_const" and _near(_const_value(halved), 0.5):
            removed, gate, has_half = removed + [halved], halved.output, True
        product = single_consumer(graph, gate)
        if product is None or product.op != "mul":
            continue
        other = product.inputs[0] if product.inputs[1] == gate else product.inputs[1]
        final = product
        if other == x and not has_half:
            last = single_consumer(graph, product.output)
            if last is None or last.op != "mul_const" or not _near(_const_value(last), 0.5):
                continue
            removed, final = removed + [product], last
        elif other != x:
            half_x = producers.get(other)
            if has_half or half_x is None or half_x.op != "mul_const" or half_x.inputs[0] != x:
                continue
            if not _near(_const_value(half_x), 0.5):
                continue
            if single_consumer(graph, half_x.output) is product:
                removed.append(half_x)
        fused = Node(
            id=final.id,
            op="gelu",
            inputs=[x],
            outputs=list(final.outputs),
            attrs={"approximate": "none"},
            origin=dict(final.origin) | {"ops": ["Erf-GELU pattern"]},
        )
        graph.nodes[graph.nodes.index(final)] = fused
        for node in removed:
            graph.nodes.remove(node)
    return graph


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
