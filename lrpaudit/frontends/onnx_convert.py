"""ONNX graph -> raw IR.

Walks the ONNX nodes in order. A node whose inputs are all constant is evaluated at load time with onnx's
reference evaluator (constant folding: initializers, Constant, shape arithmetic, casts ...). A node that reads an
activation is mapped to IR nodes by the converter registered for its op type (``onnx_ops.py``). The IR is run on
shape-only (meta) tensors as it is built, so every value has a concrete shape and ``Shape`` of an activation folds
to a constant: the graph is specialized on the input shapes it was built for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..errors import ModelError, UnsupportedOpError
from ..forward import run_node
from ..ir import Graph, Node, validate
from .onnx_file import default_opset

Converter = Callable[["Context", onnx.NodeProto], None]
CONVERTERS: dict[str, Converter] = {}

_TENSOR_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
}


def norm_axis(axis: int, rank: int) -> int:
    """A possibly negative ONNX axis as a non-negative one."""
    return axis + rank if axis < 0 else axis


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return deco


def to_param(array: np.ndarray) -> torch.Tensor:
    """A constant as an IR param: float64 master copy for floating point, int64 for integers."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(np.array(array, dtype=np.float64))
    if array.dtype == np.bool_:
        return torch.from_numpy(np.array(array, dtype=np.bool_))
    return torch.from_numpy(np.array(array, dtype=np.int64))


@dataclass
class Context:
    """State shared by the converters while one ONNX graph is translated."""

    path: str
    opset: int
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    examples: dict[str, torch.Tensor] = field(default_factory=dict)  # meta tensors: shapes of activations
    aliases: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    current: onnx.NodeProto | None = None
    float_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))  # element type of activations

    # -- values
    def name(self, value: str) -> str:
        """Resolve aliases left by removed ops (Identity, Dropout)."""
        while value in self.aliases:
            value = self.aliases[value]
        return value

    def is_const(self, value: str) -> bool:
        return value == "" or self.name(value) in self.consts

    def const(self, value: str) -> np.ndarray:
        return self.consts[self.name(value)]

    def optional_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The index-th input as a constant, or None when it is absent; an activation there is unsupported."""
        if len(node.input) <= index or node.input[index] == "":
            return None
        if not self.is_const(node.input[index]):
            self.fail(f"input {index} must be constant (it depends on the model input)")
        return self.const(node.input[index])

    def shape(self, value: str) -> tuple[int, ...]:
        return tuple(self.examples[self.name(value)].shape)

    def attr(self, node: onnx.NodeProto, key: str, default: Any = None) -> Any:
        for attribute in node.attribute:
            if attribute.name == key:
                value = helper.get_attribute_value(attribute)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, onnx.TensorProto):
                    return numpy_helper.to_array(value)
                if isinstance(value, list):
                    return [v.decode() if isinstance(v, bytes) else v for v in value]
                return value
        return default

    # -- building
    def fail(self, message: str) -> None:
        node = self.current
        where = (
            f"node {node.name or node.output[0]!r} ({node.op_type}, opset {self.opset})" if node else "graph"
        )
        raise UnsupportedOpError(f"{self.path}: {where}: {message}")

    def alias(self, out: str, src: str) -> None:
        self.aliases[out] = self.name(src)

    def emit(
        self,
        op: str,
        inputs: list[str],
        output: str,
        attrs: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> str:
        """Append an IR node, run it on meta tensors for its shape, and return its output name."""
        onnx_node = self.current
        base = (onnx_node.name or onnx_node.output[0]) if onnx_node is not None else output
        node_id, k = base, 1
        while node_id in self.ids:
            k += 1
            node_id = f"{base}:{k}"
        self.ids.add(node_id)
        node = Node(
            id=node_id,
            op=op,
            inputs=[self.name(v) for v in inputs],
            outputs=[output],
            attrs=attrs or {},
            params={
                k2: v if isinstance(v, torch.Tensor) else to_param(v) for k2, v in (params or {}).items()
            },
            origin={
                "frontend": "onnx",
                "ops": [onnx_node.op_type] if onnx_node is not None else [],
                "names": [base],
                "opset": self.opset,
                "onnx_output": output,
            },
        )
        meta_params = {
            k2: torch.empty(t.shape, dtype=torch.float32 if t.is_floating_point() else t.dtype, device="meta")
            for k2, t in node.params.items()
        }
        try:
            self.examples[output] = run_node(node, self.examples, meta_params)
        except ModelError as exc:
            self.fail(str(exc).split(": ", 1)[-1])
        except (
            Exception
        ) as exc:  # the shape run refuses the node: its inputs, weights or attributes do not fit
            shapes = [list(self.examples[v].shape) for v in node.inputs if v in self.examples]
            weights = {k2: list(t.shape) for k2, t in meta_params.items()}
            self.fail(f"the node does not fit its inputs {shapes} and weights {weights} ({_brief(exc)})")
        problem = _channel_params(node, tuple(self.examples[output].shape))
        if problem:
            self.fail(problem)
        self.nodes.append(node)
        return output

    def tmp(self, output: str, suffix: str) -> str:
        """Name for an intermediate IR value inside a node that maps to several IR nodes."""
        return f"{output}::{suffix}"


def _fold(ctx: Context, node: onnx.NodeProto) -> None:
    """Evaluate a node whose inputs are all constant with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: ctx.const(name) for name in node.input if name}
    # A bare NodeProto would run the newest version of the op; a one-node graph honours the model's opset.
    untyped = onnx.TypeProto()
    graph = helper.make_graph(
        [node],
        "fold",
        [helper.make_value_info(name, untyped) for name in feeds],
        [helper.make_value_info(name, untyped) for name in node.output if name],
    )
    try:
        evaluator = ReferenceEvaluator(graph, opsets={"": ctx.opset})
        results = evaluator.run(None, feeds)
    except Exception as exc:
        ctx.fail(f"cannot fold constant subgraph ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    for name, value in zip([name for name in node.output if name], results):
        if name:
            ctx.consts[name] = np.asarray(value)


_NON_FOLDABLE = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def _channel_params(node: Node, out: tuple[int, ...]) -> str | None:
    """Per-channel params of linear-type nodes must have one entry per output channel (shape-only runs on meta
    tensors do not check a convolution's bias)."""
    if node.op not in ("linear", "conv", "conv_transpose", "affine"):
        return None
    channels = out[-1] if node.op == "linear" else (out[1] if len(out) > 1 else None)
    for key in ("weight", "bias") if node.op == "affine" else ("bias",):
        tensor = node.params.get(key)
        if tensor is not None and tuple(tensor.shape) != (channels,):
            return f"its {key} has shape {list(tensor.shape)}; expected [{channels}], one per output channel"
    return None


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _initializer(tensor: onnx.TensorProto, path: str | Path) -> np.ndarray:
    """An initializer's data; one whose dims, type and data disagree is a ModelError naming it."""
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ModelError(
            f"{path}: initializer {tensor.name!r} (dims {list(tensor.dims)}) cannot be read: {_brief(exc)}"
        ) from exc


def convert_graph(
    model: onnx.ModelProto,
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]],
) -> Graph:
    """Translate a checked ONNX model into raw IR specialized on ``input_shapes`` (one per real graph input)."""
    from . import onnx_ops  # noqa: F401  (registers the converters)

    ctx = Context(path=str(path), opset=default_opset(model))
    for entry in model.opset_import:
        if entry.domain not in ("", "ai.onnx"):
            used = any(n.domain == entry.domain for n in model.graph.node)
            if used:
                op = next(n for n in model.graph.node if n.domain == entry.domain)
                raise UnsupportedOpError(
                    f"{path}: node {op.name or op.output[0]!r} uses op {op.op_type!r} from custom domain "
                    f"{entry.domain!r}, which lrpaudit does not support"
                )
    for init in model.graph.initializer:
        ctx.consts[init.name] = _initializer(init, path)
    graph_inputs = [v for v in model.graph.input if v.name not in ctx.consts]
    input_dtypes = {}
    for value in graph_inputs:
        elem = value.type.tensor_type.elem_type
        if elem not in _TENSOR_DTYPES:
            raise UnsupportedOpError(
                f"{path}: graph input {value.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(elem)}; only floating-point inputs can carry relevance"
            )
        input_dtypes[value.name] = _TENSOR_DTYPES[elem]
        ctx.float_dtype = np.dtype(_TENSOR_DTYPES[elem])
        ctx.examples[value.name] = torch.empty(input_shapes[value.name], device="meta")
    for node in model.graph.node:
        ctx.current = node
        if node.domain not in ("", "ai.onnx"):
            ctx.fail(f"op {node.op_type!r} from domain {node.domain!r} is not supported")
        if all(ctx.is_const(name) for name in node.input) and node.op_type not in _NON_FOLDABLE:
            _fold(ctx, node)
            continue
        convert = CONVERTERS.get(node.op_type)
        if convert is None:
            ctx.fail(f"unsupported op {node.op_type!r} on an activation (no IR mapping; refusing to guess)")
        try:
            convert(ctx, node)
        except (IndexError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            ctx.fail(f"malformed node: its inputs or attributes do not fit the op ({_brief(exc)})")
    ctx.current = None
    outputs = []
    for value in model.graph.output:
        name = ctx.name(value.name)
        if name in ctx.consts:
            raise ModelError(f"{path}: graph output {value.name!r} does not depend on the model input")
        outputs.append(name)
    graph = Graph(
        inputs=[v.name for v in graph_inputs],
        outputs=outputs,
        nodes=ctx.nodes,
        shapes={name: tuple(t.shape) for name, t in ctx.examples.items()},
        input_dtypes=input_dtypes,
        source={
            "format": "onnx",
            "path": str(path),
            "opset": ctx.opset,
            "output_names": [v.name for v in model.graph.output],
        },
    )
    validate(graph)
    return graph


def declared_input_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """The shapes the model declares for its real inputs; dynamic dims as their symbol name or None."""
    consts = {init.name for init in model.graph.initializer}
    shapes: dict[str, list[int | str | None]] = {}
    for value in model.graph.input:
        if value.name in consts:
            continue
        dims: list[int | str | None] = []
        if value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value > 0:
                    dims.append(int(dim.dim_value))
                else:
                    dims.append(dim.dim_param or None)
        shapes[value.name] = dims
    return shapes
