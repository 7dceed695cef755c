"""TorchScript graph -> raw IR, by interpreting the module's inlined graph on a concrete input.

Every node of ``module.inlined_graph`` is evaluated in order with a value environment:

* values that do not depend on the model input (weights from ``prim::GetAttr`` chains, constants, shape arithmetic,
  ``aten::size`` of an activation, lists, tuples) are computed directly and never reach the IR;
* ``prim::If`` and ``prim::Loop`` run on those concrete values, so scripted control flow is specialized on the input
  shape the graph is built for (re-interpret per shape);
* an aten op that reads an activation is executed for real (out of place) and mapped to IR nodes by the converter
  registered for it in ``ops.py`` or ``ops_shape.py``; the converter emits them through the ``Builder``
  (``builder.py``), which checks each against the real aten result, and ``naming.py`` gives their ids.

In-place aten ops (``relu_``, ``add_``) run as their functional variants and the mutated value is rebound, so cached
activations are never overwritten; their converter is the functional op's, called with the functional kind
(``functional_kind``). A value read after an in-place op changed it through a view is refused. A converter that
fails on a call's arguments is a ModelError naming op and module; an IR op that does not reproduce its aten op is
an InternalError (a bug, exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import InternalError, ModelError, UnsupportedOpError, first_line
from ...ir import Graph, validate
from .._tokens import token_misuse
from ..module_ids import assign_graph_ids
from .builder import Builder
from .naming import Naming, where
from .python_ops import PYTHON_OPS, SCALAR_OPS, SHAPE_QUERIES
from .values import (
    CONVERTERS,
    PRIM_HANDLERS,
    Act,
    Call,
    Poison,
    Refuse,
    Tokens,
    find_poison,
    first_tokens,
    has_act,
    has_tensor,
    node_schema,
    real,
)

# Fused fast-path kernels without an IR expansion (ops_fused expands the encoder layer, multi-head attention and
# scaled dot-product attention); named specially in the error.
FUSED_KERNELS = frozenset(
    {
        "aten::_transformer_decoder_only_layer_fwd",
        "aten::_native_decoder_only_multi_head_attention",
        "aten::_masked_softmax",
        "aten::_fused_sdp_choice",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_efficient_attention",
    }
)


# The ops that may read token ids: the embedding lookup, and reshapes and casts that keep the ids in order.
TOKEN_OPS = frozenset(
    {
        "aten::embedding",
        "aten::view",
        "aten::reshape",
        "aten::flatten",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::_unsafe_view",
        "aten::_reshape_alias",
        "aten::contiguous",
        "aten::clone",
        "aten::detach",
        "aten::to",
    }
)


@dataclass(eq=False)
class Interpreter:
    """Runs one graph on concrete values (one set of input shapes); converters build the IR into ``builder``.

    TorchScript values are keyed by ``Value.unique()``. Views share an alias group with their base, so an in-place
    write through one of them marks the others stale: reading a stale value is refused.
    """

    module: Any
    path: str
    builder: Builder
    # Value -> what it holds: a concrete value, an Act or a Poison.
    env: dict[int, Any] = field(default_factory=dict)
    # Value -> qualified name of the module attribute it is (``features.0.weight``), from prim::GetAttr chains.
    qualnames: dict[int, str] = field(default_factory=dict)
    # Value -> its alias group: the value whose storage it shares (itself if none).
    alias_group: dict[int, int] = field(default_factory=dict)
    # Value -> the in-place op that changed it through a view.
    stale: dict[int, str] = field(default_factory=dict)
    # Qualified name -> the private copy of the module attribute (one per graph).
    attr_cache: dict[str, Any] = field(default_factory=dict)
    # The node being run.
    current: torch._C.Node | None = None

    def fail(self, message: str, cls: type[Exception] = UnsupportedOpError) -> None:
        raise cls(f"{self.path}: {where(self.module, self.current)}: {message}")

    def read(self, value: torch._C.Value) -> Any:
        uid = value.unique()
        if uid in self.stale:
            self.fail(
                f"reads {value.debugName()!r} after an in-place op ({self.stale[uid]}) changed it through a view; "
                "lrpaudit cannot follow mutation through aliases"
            )
        if uid not in self.env:
            self.fail(f"value {value.debugName()!r} is read before it is defined", InternalError)
        return self.env[uid]

    def bind(self, value: torch._C.Value, result: Any, group: int | None = None) -> None:
        uid = value.unique()
        self.env[uid] = result
        self.stale.pop(uid, None)
        self.alias_group[uid] = uid if group is None else group

    def run_block(self, block: torch._C.Block) -> list[Any]:
        for node in block.nodes():
            self.run(node)
        self.current = None
        return [self.read(v) for v in block.returnNode().inputs()]

    def run(self, node: torch._C.Node) -> None:
        self.current, self.builder.call = node, None
        kind = node.kind()
        handler = PRIM_HANDLERS.get(kind)
        if handler is not None:
            handler(self, node)
            return
        inputs = [self.read(v) for v in node.inputs()]
        poison = find_poison(inputs)
        if poison is not None:
            self.fail(poison.message)
        if kind in ("aten::tensor", "aten::as_tensor") and has_act(inputs):
            self.fail(
                "builds a tensor from the values of an activation (value-dependent code is not supported)"
            )
        if kind in PYTHON_OPS or (kind in SCALAR_OPS and not any(has_tensor(x) for x in inputs)):
            table = PYTHON_OPS if kind in PYTHON_OPS else SCALAR_OPS
            self._bind_outputs(node, table[kind](*inputs), inputs)
            return
        schema = node_schema(node)
        if schema is None:
            self.fail(f"op {kind!r} is not supported (no schema)")
        if not has_act(inputs):  # constants only: in-place ops run truly in place on private copies
            self._bind_outputs(node, self.call_aten(node, schema, inputs, in_place=True), inputs, False)
            return
        if kind in SHAPE_QUERIES:
            self._bind_outputs(node, self.call_aten(node, schema, real(inputs)), inputs)
            return
        tokens = first_tokens(inputs)
        if tokens is not None and kind not in TOKEN_OPS:
            self.fail(token_misuse(tokens.source))
        functional = functional_kind(kind, schema)
        fn = CONVERTERS.get(functional)
        if fn is None:
            if kind in FUSED_KERNELS:
                self.fail(
                    "fused fast-path kernel: its layers (attention, layer norm, feed-forward) are hidden inside one "
                    "op that lrpaudit cannot decompose; torch records it when a transformer is traced under "
                    "torch.no_grad() in eval mode"
                )
            self.fail(f"unsupported op {kind!r} on an activation (no IR mapping; refusing to guess)")
        out = self.call_aten(node, schema, real(inputs))
        args = {a.name: x for a, x in zip(schema.arguments, inputs)}
        qualnames = {
            a.name: self.qualnames[v.unique()]
            for a, v in zip(schema.arguments, node.inputs())
            if v.unique() in self.qualnames
        }
        self.builder.call = Call(node, functional, schema, args, out, qualnames)
        try:
            result = fn(self.builder, self.builder.call)
        except Refuse as exc:
            self.fail(str(exc), exc.cls)
        except (IndexError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            self.fail(
                f"the call's arguments do not fit the op's converter ({type(exc).__name__}: {first_line(exc)})",
                ModelError,
            )
        self._bind_outputs(node, result, inputs)

    def _bind_outputs(self, node: torch._C.Node, result: Any, inputs: list[Any], track: bool = True) -> None:
        """Bind the node's outputs; views join their base's alias group; in-place writes are tracked if ``track``."""
        outputs = list(node.outputs())
        schema = node_schema(node)
        if len(outputs) == 1:
            results = [result]
        else:
            results = list(result) if result is not None else [None] * len(outputs)
        groups: dict[str, int] = {}
        write_target = None
        if schema is not None:
            for arg, value in zip(schema.arguments, node.inputs()):
                info = arg.alias_info
                if info is not None:
                    for key in info.before_set:
                        groups.setdefault(key, self.alias_group.get(value.unique(), value.unique()))
                    if info.is_write and write_target is None:
                        write_target = value
        for index, (value, item) in enumerate(zip(outputs, results)):
            group = None
            if schema is not None and index < len(schema.returns):
                info = schema.returns[index].alias_info
                if info is not None:
                    group = next((groups[k] for k in info.before_set if k in groups), None)
            self.bind(value, item, group)
        if track and write_target is not None and len(outputs) >= 1:
            self._mutated(write_target, results[0], {v.unique() for v in outputs})

    def _mutated(self, target: torch._C.Value, result: Any, exclude: set[int]) -> None:
        """An in-place op wrote ``target``: rebind it to the new value; other aliases of it go stale."""
        uid = target.unique()
        group = self.alias_group.get(uid, uid)
        for other, other_group in self.alias_group.items():
            if other_group == group and other != uid and other not in exclude and other in self.env:
                self.stale[other] = self.current.kind() if self.current is not None else "in-place op"
        self.env[uid] = result
        self.stale.pop(uid, None)

    def call_aten(
        self, node: torch._C.Node, schema: torch._C.FunctionSchema, inputs: list[Any], in_place: bool = False
    ) -> Any:
        """Run the op for real; an in-place op writes a private copy of its target (unless ``in_place``), so no
        activation is overwritten (the op itself runs: its functional twin may have no matching overload, e.g.
        ``transpose_`` against ``transpose.int``)."""
        name, overload = schema.name, schema.overload_name
        namespace, short = name.split("::")
        if short == "is_grad_enabled":
            return True  # generic code paths, as under autograd; reference runs under no_grad
        try:
            packet = getattr(getattr(torch.ops, namespace), short)
            op = getattr(packet, overload or "default")
        except (AttributeError, RuntimeError):
            self.fail(f"op {node.kind()!r} (overload {overload or 'default'}) cannot be evaluated")
        args, kwargs = [], {}
        for arg, value in zip(schema.arguments, inputs):
            if arg.kwarg_only:
                kwargs[arg.name] = value
            else:
                args.append(value)
        if not in_place and _inplace(schema) and args and isinstance(args[0], torch.Tensor):
            args[0] = args[0].clone()
        try:
            with torch.no_grad():
                return op(*args, **kwargs)
        except Exception as exc:
            self.fail(f"torch fails on these input shapes: {first_line(exc)}", ModelError)


def _inplace(schema: torch._C.FunctionSchema) -> bool:
    return (
        bool(schema.arguments)
        and schema.arguments[0].alias_info is not None
        and schema.arguments[0].alias_info.is_write
    )


def functional_kind(kind: str, schema: torch._C.FunctionSchema) -> str:
    """The out-of-place twin of an in-place op (``aten::hardtanh_`` -> ``aten::hardtanh``); other kinds as they
    are. Converters are registered, looked up and called under this kind."""
    if _inplace(schema) and kind.endswith("_") and not kind.endswith("__"):
        return kind[:-1]
    return kind


def interpret(
    module: Any, path: str, feeds: dict[str, torch.Tensor], dtype: torch.dtype
) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Interpret ``module.forward`` on ``feeds`` (tensors by forward argument name): the raw IR, and the real
    (aten) value of every IR value."""
    graph = module.inlined_graph
    builder = Builder(dtype=dtype, naming=Naming(module))
    ctx = Interpreter(module=module, path=path, builder=builder)
    graph_inputs = list(graph.inputs())
    ctx.bind(graph_inputs[0], module)
    schema_args = module.forward.schema.arguments[1:]
    names = []
    for value, arg in zip(graph_inputs[1:], schema_args):
        if arg.name in feeds and not feeds[arg.name].is_floating_point():
            tensor = feeds[arg.name]  # token ids: no IR value; their embedding lookup becomes an IR input
            builder.naming.names.add(arg.name)
            builder.shapes[arg.name] = tuple(tensor.shape)
            ctx.bind(value, Tokens(arg.name, tensor, arg.name))
            names.append(arg.name)
        elif arg.name in feeds:
            ctx.bind(value, builder.new_input(arg.name, feeds[arg.name]))
            names.append(arg.name)
        elif arg.has_default_value():
            ctx.bind(value, arg.default_value)
        else:
            raise ModelError(f"{path}: forward argument {arg.name!r} ({arg.type}) has no value")
    with torch.no_grad():
        results = ctx.run_block(graph.block())
    flat: list[Any] = []

    def collect(item: Any) -> None:
        if isinstance(item, (list, tuple)):
            for sub in item:
                collect(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                collect(sub)
        else:
            flat.append(item)

    collect(results)
    outputs = []
    for index, item in enumerate(flat):
        if isinstance(item, Poison):
            raise UnsupportedOpError(f"{path}: output {index}: {item.message}")
        if isinstance(item, Tokens):
            raise ModelError(f"{path}: output {index} is the integer input {item.source!r}")
        if not isinstance(item, Act):
            raise ModelError(
                f"{path}: output {index} ({type(item).__name__}) does not depend on the model input"
            )
        outputs.append(item.name)
    embedded = {token.embedded: token for token in builder.token_inputs}
    ir = Graph(
        inputs=list(builder.inputs),
        outputs=outputs,
        nodes=builder.nodes,
        shapes=dict(builder.shapes),
        input_dtypes={
            name: str(builder.values[name].dtype if name in embedded else feeds[name].dtype).replace(
                "torch.", ""
            )
            for name in builder.inputs
        },
        source={"format": "torchscript", "path": path, "output_names": list(outputs), "inputs": names},
        token_inputs=list(builder.token_inputs),
    )
    assign_graph_ids(ir)
    validate(ir)
    return ir, builder.values
