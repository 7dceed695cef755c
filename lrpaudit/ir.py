"""The canonical intermediate representation: a flat, topologically ordered list of nodes over named values.

Frontends build it from model files, passes rewrite it, the forward executor and the LRP engine consume it.
Only activation values (those that depend on the model input) appear as node inputs; everything constant lives in
``Node.params`` so relevance flows back along ``inputs`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ModelError, UnsupportedOpError

if TYPE_CHECKING:  # annotations only: the op families below are read by `lrpaudit rules` without torch
    import torch

# The op families, defined here once. Linear-type: ops whose LRP treatment is a linear-type rule (zero, epsilon,
# gamma, ...), the ones a config must give a rule.
LINEAR_TYPE = ("linear", "conv", "conv_transpose", "affine")
# Weighted: the linear-type ops with a weight matrix of their own: the nodes that config matchers count (`index`,
# `position`) and that a BatchNorm can be folded into. `affine` (an unfolded BatchNorm) is not one (see
# config/matching.py for why).
WEIGHTED = ("linear", "conv", "conv_transpose")
# Pooling ops that LRP treats as linear maps without bias (norm / flat rules).
POOLS = ("avgpool", "global_avgpool", "mean")
# Elementwise activations: relevance passes through unchanged.
ACTIVATION_OPS = frozenset(
    {
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "gelu",
        "silu",
        "elu",
        "hardswish",
        "hardsigmoid",
        "clip",
        "softplus",
        "erf",
    }
)
# Ops that only move values around: relevance is routed by position (``where`` with a constant condition picks
# each position from one operand).
ROUTING_OPS = frozenset({"reshape", "permute", "concat", "slice", "gather", "pad", "expand", "roll", "where"})
# Transformer ops (DESIGN section 12): products of two activations, normalizations with a statistic of the input.
PRODUCTS = ("matmul", "einsum", "mul")
NORMS = ("layernorm", "groupnorm")
# Steps of decomposed normalizations and activations (x ** p, sqrt, 1/x, a / b of two activations): the frontends
# emit them and the passes fuse them into ``layernorm`` / ``gelu``; a canonical graph never contains one.
FUSION_ONLY = frozenset({"pow", "sqrt", "rsqrt", "reciprocal", "div"})


@dataclass(frozen=True, eq=False)
class TokenInput:
    """An integer model input of token ids that the model reads only through one embedding lookup.

    The IR starts at the looked-up embeddings: ``embedded`` is a graph input of the IR holding
    ``table[ids.reshape(index_shape)]``, and the API computes it from each batch of ids (the prologue) before the
    forward check and the propagation; the runtime is still fed the raw ids ``name``. ``index_shape`` is the shape
    the lookup sees (batch axis first; the graph is specialized on it).
    """

    name: str
    embedded: str
    table: torch.Tensor
    index_shape: tuple[int, ...]

    @property
    def vocab(self) -> int:
        """The number of valid token ids (rows of the embedding table)."""
        return int(self.table.shape[0])


@dataclass
class Node:
    """One IR operation.

    ``inputs`` are activation value names only; constants are in ``params`` (torch tensors, never written to:
    floating point in the file's own precision where no pass changed them, float64 where lrpaudit computed them,
    e.g. a folded BatchNorm). ``origin`` records where the node came from (frontend, source op types and names,
    opset).
    """

    id: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """The single output name (every IR op has exactly one)."""
        return self.outputs[0]


@dataclass
class Graph:
    """A model as IR: named graph inputs and outputs, nodes in topological order, known value shapes.

    ``shapes`` holds the concrete shapes the graph was specialized on (batch dimension included).
    ``notes`` collects what passes did to the graph (e.g. a stripped softmax), so reports can say so.
    """

    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_dtypes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    # Integer inputs audited from their embeddings (their ``embedded`` values are among ``inputs``).
    token_inputs: list[TokenInput] = field(default_factory=list)

    def producers(self) -> dict[str, Node]:
        """Map each value name to the node that produces it."""
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Map each value name to the nodes that read it (graph outputs not included)."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                users.setdefault(name, []).append(node)
        return users

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


def validate(graph: Graph) -> None:
    """Check the structural invariants: unique ids and values, inputs defined before use, outputs produced."""
    defined = set(graph.inputs)
    ids: set[str] = set()
    for node in graph.nodes:
        if node.id in ids:
            raise ModelError(f"IR: duplicate node id {node.id!r}")
        ids.add(node.id)
        for name in node.inputs:
            if name not in defined:
                raise ModelError(f"IR: node {node.id!r} reads {name!r} before it is defined")
        for name in node.outputs:
            if name in defined:
                raise ModelError(f"IR: value {name!r} is produced twice (node {node.id!r})")
            defined.add(name)
    for name in graph.outputs:
        if name not in defined:
            raise ModelError(f"IR: graph output {name!r} is not produced by any node")
    if not graph.outputs:
        raise ModelError("IR: the graph has no outputs")


def check_batch_axis(graph: Graph) -> None:
    """Refuse graphs in which an op moves values between samples: the audit is per sample.

    Every value must keep the inputs' batch size on axis 0 (row-major, so a reshape that keeps axis 0 keeps each
    sample's block together).
    """
    sizes = {graph.shapes[name][0] for name in graph.inputs if graph.shapes.get(name)}
    if len(sizes) != 1:
        return
    (batch,) = sizes
    for node in graph.nodes:
        shape = graph.shapes.get(node.output)
        if shape is not None and (len(shape) == 0 or shape[0] != batch):
            source = graph.source.get("path", "model")
            raise UnsupportedOpError(
                f"{source}: node {node.id!r} ({node.op}) turns the batch axis of size {batch} into "
                f"{list(shape)}: ops that mix or drop samples cannot be audited per sample"
            )


def describe_params(node: Node) -> str:
    """A compact description of the node's params and key attributes, for tables."""
    parts = [f"{name}{list(t.shape)}" for name, t in node.params.items()]
    for key in ("stride", "padding", "groups", "kernel", "axis", "perm", "alpha", "gate"):
        if key in node.attrs and node.attrs[key] not in (None, 1, (1,), (1, 1)):
            parts.append(f"{key}={node.attrs[key]}")
    return " ".join(parts)


def table_rows(graph: Graph) -> list[dict[str, str]]:
    """Rows for a readable IR table: id, op, input and output shapes, params, origin."""
    rows = []
    for node in graph.nodes:
        in_shapes = ", ".join(str(list(graph.shapes.get(v, ()))) for v in node.inputs)
        out_shapes = ", ".join(str(list(graph.shapes.get(v, ()))) for v in node.outputs)
        rows.append(
            {
                "id": node.id,
                "op": node.op,
                "inputs": in_shapes,
                "outputs": out_shapes,
                "params": describe_params(node),
                "origin": "+".join(node.origin.get("ops", [])),
            }
        )
    return rows
