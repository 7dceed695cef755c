"""ONNX graph -> raw IR.

Walks the ONNX nodes in order. A node whose inputs are all constant is evaluated at load time with onnx's
reference evaluator (constant folding: initializers, Constant, shape arithmetic, casts ...). A node that reads an
activation is mapped to IR nodes by the converter registered for its op type (``ops_basic``, ``ops_layers``,
``ops_shape``; the package imports them, which fills the registry in ``context``). Every IR value's shape is
inferred as the IR is built (``ops.infer_shape``, arithmetic on shapes: nothing runs), so every value has a concrete
shape and ``Shape`` of an activation folds to a constant: the graph is specialized on the input shapes it was
built for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ModelError, UnsupportedOpError
from ...ir import Graph, validate
from ..module_ids import assign_graph_ids
from .context import CONVERTERS, Context, brief
from .file import default_opset
from .ops_tokens import _INTEGER_TYPES, convert_token_node, reads_tokens
from .scopes import node_scopes, non_leaf_paths

_TENSOR_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
}


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
        ctx.fail(f"cannot fold constant subgraph ({brief(exc)})")
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


def _initializer(tensor: onnx.TensorProto, path: str | Path) -> np.ndarray:
    """An initializer's data; one whose dims, type and data disagree is a ModelError naming it."""
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ModelError(
            f"{path}: initializer {tensor.name!r} (dims {list(tensor.dims)}) cannot be read: {brief(exc)}"
        ) from exc


def convert_graph(
    model: onnx.ModelProto,
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]],
) -> Graph:
    """Translate a checked ONNX model into raw IR specialized on ``input_shapes`` (one per real graph input)."""
    ctx = Context(path=str(path), opset=default_opset(model))
    ctx.consumed = frozenset(
        [name for node in model.graph.node for name in node.input] + [v.name for v in model.graph.output]
    )
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
        ctx.shapes[value.name] = tuple(int(d) for d in input_shapes[value.name])
        if elem in _INTEGER_TYPES:  # token ids: audited from their embedding lookup (ops_tokens)
            ctx.tokens[value.name] = value.name
            continue
        if elem not in _TENSOR_DTYPES:
            raise UnsupportedOpError(
                f"{path}: graph input {value.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(elem)}; only floating-point inputs (or integer token ids) can "
                "be audited"
            )
        input_dtypes[value.name] = _TENSOR_DTYPES[elem]
        ctx.float_dtype = np.dtype(_TENSOR_DTYPES[elem])
    scopes = node_scopes(model)
    ctx.non_leaf = non_leaf_paths(scopes)
    for node, scope in zip(model.graph.node, scopes):
        ctx.current, ctx.scope = node, scope
        if node.domain not in ("", "ai.onnx"):
            ctx.fail(f"op {node.op_type!r} from domain {node.domain!r} is not supported")
        if reads_tokens(ctx, node):
            convert_token_node(ctx, node)
            continue
        if all(ctx.is_const(name) for name in node.input) and node.op_type not in _NON_FOLDABLE:
            _fold(ctx, node)
            continue
        convert = CONVERTERS.get(node.op_type)
        if convert is None:
            ctx.fail(f"unsupported op {node.op_type!r} on an activation (no IR mapping; refusing to guess)")
        try:
            convert(ctx, node)
        except (IndexError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            ctx.fail(f"malformed node: its inputs or attributes do not fit the op ({brief(exc)})")
    ctx.current, ctx.scope = None, None
    outputs = []
    for value in model.graph.output:
        name = ctx.name(value.name)
        if name in ctx.consts:
            raise ModelError(f"{path}: graph output {value.name!r} does not depend on the model input")
        if name in ctx.tokens:
            raise ModelError(f"{path}: graph output {value.name!r} is the integer input {ctx.tokens[name]!r}")
        outputs.append(name)
    for token in ctx.token_inputs:
        input_dtypes[token.embedded] = _TENSOR_DTYPES[onnx.helper.np_dtype_to_tensor_dtype(ctx.float_dtype)]
    graph = Graph(
        inputs=[v.name for v in graph_inputs if v.name not in ctx.tokens]
        + [t.embedded for t in ctx.token_inputs],
        outputs=outputs,
        nodes=ctx.nodes,
        shapes=dict(ctx.shapes),
        input_dtypes=input_dtypes,
        source={
            "format": "onnx",
            "path": str(path),
            "opset": ctx.opset,
            "output_names": [v.name for v in model.graph.output],
        },
        token_inputs=list(ctx.token_inputs),
    )
    assign_graph_ids(graph)
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


def integer_inputs(model: onnx.ModelProto) -> list[str]:
    """The real graph inputs of an integer element type."""
    consts = {init.name for init in model.graph.initializer}
    return [
        value.name
        for value in model.graph.input
        if value.name not in consts and value.type.tensor_type.elem_type in _INTEGER_TYPES
    ]
