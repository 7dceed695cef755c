"""TorchScript ``prim::`` nodes evaluated on concrete values: constants, attribute chains, lists and tuples,
control flow (``prim::If`` / ``prim::Loop`` taken on the real values), tensor metadata queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...errors import ModelError
from .interp import Interpreter
from .values import PRIM_HANDLERS, has_act, real

MAX_LOOP_TRIPS = 1_000_000


def _private(value: Any) -> Any:
    """A copy of a model tensor that in-place ops of the forward code may change without touching the model."""
    if not isinstance(value, torch.Tensor):
        return value
    copy = value.detach().clone()
    return copy.requires_grad_(True) if value.requires_grad else copy


def _constant(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.bind(node.output(), _private(node.output().toIValue()))


def _get_attr(ctx: Interpreter, node: torch._C.Node) -> None:
    owner_value = node.input()
    owner = ctx.read(owner_value)
    attr = node.s("name")
    prefix = ctx.qualnames.get(owner_value.unique(), "")
    qualname = f"{prefix}.{attr}" if prefix else attr
    if qualname in ctx.attr_cache:
        result = ctx.attr_cache[qualname]
    else:
        try:
            result = getattr(owner, attr)
        except AttributeError:
            ctx.fail(f"attribute {qualname!r} not found on the module", ModelError)
        result = _private(result)  # keeps requires_grad: generic (non fast-path) code paths are taken
        ctx.attr_cache[qualname] = result
    ctx.bind(node.output(), result)
    ctx.qualnames[node.output().unique()] = qualname


def _set_attr(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.fail(f"the model changes its attribute {node.s('name')!r} during forward (training-mode code?)")


def _list_construct(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.bind(node.output(), [ctx.read(v) for v in node.inputs()])


def _tuple_construct(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.bind(node.output(), tuple(ctx.read(v) for v in node.inputs()))


def _unpack(ctx: Interpreter, node: torch._C.Node) -> None:
    items = list(ctx.read(node.input()))
    outputs = list(node.outputs())
    if len(items) != len(outputs):
        ctx.fail(f"unpacks {len(items)} values into {len(outputs)}", ModelError)
    for value, item in zip(outputs, items):
        ctx.bind(value, item)


def _tuple_index(ctx: Interpreter, node: torch._C.Node) -> None:
    items, index = (ctx.read(v) for v in node.inputs())
    ctx.bind(node.output(), items[index])


def _dict_construct(ctx: Interpreter, node: torch._C.Node) -> None:
    items = [ctx.read(v) for v in node.inputs()]
    ctx.bind(node.output(), dict(zip(items[0::2], items[1::2])))


def _passthrough(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.bind(node.output(), ctx.read(node.input()), ctx.alias_group.get(node.input().unique()))


def _uninitialized(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.bind(node.output(), None)


def _raise(ctx: Interpreter, node: torch._C.Node) -> None:
    message = ctx.read(node.inputsAt(0)) if node.inputsSize() else "exception"
    ctx.fail(f"the model raises an exception on these input shapes: {message}", ModelError)


def _num_to_tensor(ctx: Interpreter, node: torch._C.Node) -> None:
    value = ctx.read(node.input())
    if has_act(value):
        ctx.fail("converts an activation to a tensor scalar (value-dependent code)")
    ctx.bind(node.output(), torch.ops.prim.NumToTensor(value))


def _tensor_meta(fn: Callable[[torch.Tensor], Any]) -> Callable[[Interpreter, torch._C.Node], None]:
    def handler(ctx: Interpreter, node: torch._C.Node) -> None:
        value = real(ctx.read(node.input()))
        ctx.bind(node.output(), fn(value))

    return handler


def _if(ctx: Interpreter, node: torch._C.Node) -> None:
    cond = ctx.read(node.input())
    if has_act(cond) or isinstance(cond, torch.Tensor):
        ctx.fail("branches on a tensor value (data-dependent control flow is not supported)")
    blocks = list(node.blocks())
    results = ctx.run_block(blocks[0] if cond else blocks[1])
    ctx.current = node
    for value, result in zip(node.outputs(), results):
        ctx.bind(value, result)


def _loop(ctx: Interpreter, node: torch._C.Node) -> None:
    inputs = [ctx.read(v) for v in node.inputs()]
    trips, cond, carried = inputs[0], inputs[1], inputs[2:]
    if isinstance(cond, torch.Tensor) or has_act(cond) or isinstance(trips, torch.Tensor):
        ctx.fail("loops on a tensor value (data-dependent control flow is not supported)")
    block = next(iter(node.blocks()))
    params = list(block.inputs())
    index = 0
    while cond and index < trips:
        if index >= MAX_LOOP_TRIPS:
            ctx.fail(f"loop runs more than {MAX_LOOP_TRIPS} iterations")
        for value, item in zip(params, [index, *carried]):
            ctx.bind(value, item)
        results = ctx.run_block(block)
        cond, carried = results[0], results[1:]
        if isinstance(cond, torch.Tensor) or has_act(cond):
            ctx.current = node
            ctx.fail("loops on a tensor value (data-dependent control flow is not supported)")
        index += 1
    ctx.current = node
    for value, item in zip(node.outputs(), carried):
        ctx.bind(value, item)


def _unsupported_prim(ctx: Interpreter, node: torch._C.Node) -> None:
    ctx.fail(f"{node.kind()} is not supported (the graph should be fully inlined)")


_HANDLERS: dict[str, Callable[[Interpreter, torch._C.Node], None]] = {
    "prim::Constant": _constant,
    "prim::GetAttr": _get_attr,
    "prim::SetAttr": _set_attr,
    "prim::ListConstruct": _list_construct,
    "prim::TupleConstruct": _tuple_construct,
    "prim::ListUnpack": _unpack,
    "prim::TupleUnpack": _unpack,
    "prim::TupleIndex": _tuple_index,
    "prim::DictConstruct": _dict_construct,
    "prim::unchecked_cast": _passthrough,
    "prim::data": _passthrough,
    "prim::Uninitialized": _uninitialized,
    "prim::RaiseException": _raise,
    "prim::NumToTensor": _num_to_tensor,
    "prim::device": _tensor_meta(lambda t: t.device),
    "prim::dtype": _tensor_meta(lambda t: t.dtype),
    "prim::is_cuda": _tensor_meta(lambda t: t.is_cuda),
    "prim::layout": _tensor_meta(lambda t: t.layout),
    # Parameters keep theirs: generic (non fast-path) code paths are taken.
    "prim::requires_grad": _tensor_meta(lambda t: t.requires_grad),
    "prim::shape": _tensor_meta(lambda t: list(t.shape)),
    "prim::is_nested": _tensor_meta(lambda t: t.is_nested),
    "prim::is_sparse": _tensor_meta(lambda t: t.is_sparse),
    "prim::is_quantized": _tensor_meta(lambda t: t.is_quantized),
    "prim::is_meta": _tensor_meta(lambda t: t.is_meta),
    "prim::is_mkldnn": _tensor_meta(lambda t: t.is_mkldnn),
    "prim::If": _if,
    "prim::Loop": _loop,
    "prim::Print": lambda ctx, node: None,
    "prim::CallMethod": _unsupported_prim,
    "prim::CallFunction": _unsupported_prim,
    "prim::PythonOp": _unsupported_prim,
    "prim::Enter": _unsupported_prim,
    "prim::Exit": _unsupported_prim,
}
PRIM_HANDLERS.update(_HANDLERS)
