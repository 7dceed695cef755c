"""Integer token-id inputs: followed to their embedding lookup, whose output becomes a graph input of the IR.

A text model's ids reach the network only through ``Gather(table, ids)``; everything after it is an ordinary float
graph. Ids may be reshaped on the way (``Reshape``, ``(Un)Squeeze``, ``Flatten``, integer ``Cast``: the order of the
ids is kept, so the lookup sees ``ids.reshape(index_shape)``) and their shape may be read. Any other use reads the
ids as numbers (a padding mask computed from them, an argmax) and is refused: such a use is data that carries no
relevance. The position ids a model computes from the input's shape are constants and fold as usual.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...ir import TokenInput
from .._tokens import token_misuse
from .context import Context, norm_axis, to_param
from .ops_basic import shape_of

# Ops that keep the ids in order; their output shape comes from onnx's reference implementation on zeros.
_ORDER_KEEPING = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast"})
_INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.INT64,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.UINT64,
    }
)


def reads_tokens(ctx: Context, node: onnx.NodeProto) -> bool:
    return any(name and ctx.name(name) in ctx.tokens for name in node.input)


def convert_token_node(ctx: Context, node: onnx.NodeProto) -> None:
    """A node that reads token ids: the embedding lookup, an order-keeping reshape or a shape query."""
    if node.op_type in ("Shape", "Size"):
        shape_of(ctx, node)
    elif node.op_type == "Gather" and ctx.is_const(node.input[0]) and ctx.name(node.input[1]) in ctx.tokens:
        _embedding(ctx, node)
    elif node.op_type in _ORDER_KEEPING and ctx.name(node.input[0]) in ctx.tokens:
        _reshaped(ctx, node)
    else:
        source = next(ctx.tokens[ctx.name(n)] for n in node.input if n and ctx.name(n) in ctx.tokens)
        ctx.fail(token_misuse(source))


def _reshaped(ctx: Context, node: onnx.NodeProto) -> None:
    source = ctx.tokens[ctx.name(node.input[0])]
    if node.op_type == "Cast" and ctx.attr(node, "to") not in _INTEGER_TYPES:
        ctx.fail(token_misuse(source))
    shape = ctx.shape(node.input[0])
    others = {name: ctx.const(name) for name in node.input[1:] if name}
    untyped = onnx.TypeProto()
    feeds = {node.input[0]: np.zeros(shape, dtype=np.int64), **others}
    graph = helper.make_graph(
        [node],
        "shape",
        [helper.make_value_info(name, untyped) for name in feeds],
        [helper.make_value_info(node.output[0], untyped)],
    )
    from onnx.reference import ReferenceEvaluator

    (result,) = ReferenceEvaluator(graph, opsets={"": ctx.opset}).run(None, feeds)
    if not result.shape or result.shape[0] != shape[0]:
        ctx.fail(
            f"reshapes the token ids {source!r} across the batch axis ({list(shape)} -> {list(result.shape)})"
        )
    ctx.tokens[node.output[0]] = source
    ctx.shapes[node.output[0]] = tuple(int(d) for d in result.shape)


def _embedding(ctx: Context, node: onnx.NodeProto) -> None:
    """``Gather(table, ids)`` over the table's rows: its output is an IR graph input, looked up per batch."""
    table = ctx.const(node.input[0])
    source = ctx.tokens[ctx.name(node.input[1])]
    if norm_axis(int(ctx.attr(node, "axis", 0)), table.ndim) != 0 or table.ndim != 2:
        ctx.fail(
            f"looks up the token ids {source!r} in a table of shape {list(table.shape)} along another axis than its rows"
        )
    if not np.issubdtype(table.dtype, np.floating):
        ctx.fail(f"looks the token ids {source!r} up in a table of type {table.dtype}, not floating point")
    index_shape = ctx.shape(node.input[1])
    out = node.output[0]
    ctx.token_inputs.append(TokenInput(source, out, to_param(table), tuple(index_shape)))
    ctx.float_dtype = table.dtype
    ctx.shapes[out] = (*index_shape, int(table.shape[1]))
