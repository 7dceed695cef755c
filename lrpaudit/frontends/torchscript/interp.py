"""TorchScript graph -> raw IR, by interpreting the module's inlined graph on a concrete input.

Every node of ``module.inlined_graph`` is evaluated in order with a value environment:

* values that do not depend on the model input (weights from ``prim::GetAttr`` chains, constants, shape arithmetic,
  ``aten::size`` of an activation, lists, tuples) are computed directly and never reach the IR;
* ``prim::If`` and ``prim::Loop`` run on those concrete values, so scripted control flow is specialized on the input
  shape the graph is built for (re-interpret per shape);
* an aten op that reads an activation is executed for real (out of place) and mapped to IR nodes by the converter
  registered for it in ``ops.py`` or ``ops_shape.py``; each emitted IR node is checked against the real aten result.

In-place aten ops (``relu_``, ``add_``) run as their functional variants and the mutated value is rebound, so cached
activations are never overwritten. A value read after an in-place op changed it through a view is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import FidelityError, ModelError, UnsupportedOpError, first_line
from ...forward import run_node
from ...ir import LINEAR_TYPE, Graph, Node, validate
from .python_ops import PYTHON_OPS, SCALAR_OPS, SHAPE_QUERIES
from .values import (
    CONVERTERS,
    PRIM_HANDLERS,
    Act,
    Call,
    Poison,
    Refuse,
    find_poison,
    has_act,
    has_tensor,
    node_schema,
    real,
)

# Per-node build check: |IR op - aten op| relative to the aten output's scale.
BUILD_RTOL = {torch.float32: 1e-4, torch.float64: 1e-9}

# Fused fast-path kernels: no IR decomposition; named specially in the error.
FUSED_KERNELS = frozenset(
    {
        "aten::_transformer_encoder_layer_fwd",
        "aten::_native_multi_head_attention",
        "aten::_transformer_decoder_only_layer_fwd",
        "aten::_native_decoder_only_multi_head_attention",
        "aten::_masked_softmax",
        "aten::_fused_sdp_choice",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_efficient_attention",
    }
)


_HIERARCHY_PART = re.compile(r"([^.()]+)\(([^()]*)\)")


def module_scope(node: torch._C.Node) -> list[tuple[str, str]]:
    """``[(name, type), ...]`` of the module call stack the node ran in (``features(Sequential).0(Conv2d)``)."""
    try:
        text = node.getModuleHierarchy()
    except Exception:  # pragma: no cover - old torch
        return []
    parts = []
    for name, type_name in _HIERARCHY_PART.findall(text or ""):
        if name == "SELF":  # a method called on the same module (``self._forward_impl``)
            continue
        if name == "UNKNOWN_INSTANCE":  # a free function called from the module: still that module's op
            break
        parts.append((name, type_name))
    return parts


@dataclass
class Context:
    """Interpreter state for one graph, one set of input shapes."""

    module: Any
    path: str
    dtype: torch.dtype
    nodes: list[Node] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # The real (aten) value of every named activation.
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    env: dict[int, Any] = field(default_factory=dict)
    qualnames: dict[int, str] = field(default_factory=dict)
    alias_group: dict[int, int] = field(default_factory=dict)
    stale: dict[int, str] = field(default_factory=dict)
    id_info: list[tuple[Node, str, bool, str]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    attr_cache: dict[str, Any] = field(default_factory=dict)
    current: torch._C.Node | None = None
    call: Call | None = None
    leaf_paths: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        paths = [name for name, _ in self.module.named_modules()]
        parents = {p.rsplit(".", 1)[0] if "." in p else "" for p in paths if p}
        self.leaf_paths = {p for p in paths if p and p not in parents}

    # -------------------------------------------------------------- errors and names
    def where(self) -> str:
        node = self.current
        if node is None:
            return "graph"
        scope = module_scope(node)
        if scope:
            module = f"module {'.'.join(n for n, _ in scope)!r} ({scope[-1][1]})"
        else:
            module = f"the root module ({getattr(self.module, 'original_name', type(self.module).__name__)})"
        return f"{node.kind()} in {module}"

    def fail(self, message: str, cls: type[ModelError] = UnsupportedOpError) -> None:
        raise cls(f"{self.path}: {self.where()}: {message}")

    def module_path(self) -> str:
        return ".".join(name for name, _ in module_scope(self.current)) if self.current is not None else ""

    def scope_key(self, weight: str | None) -> tuple[str, bool]:
        """Where the current op belongs: ``(module path, is_leaf)``; a weight's owner stands in for a leaf."""
        path = self.module_path()
        if path in self.leaf_paths:
            return path, True
        if weight:
            return (weight.rsplit(".", 1)[0] if "." in weight else weight), True
        return path, False

    def assign_ids(self) -> None:
        """Node ids from the module hierarchy, given once all nodes exist.

        A leaf module's call (a run of consecutive nodes from the same leaf) gives its path to its main node: the
        first linear-type node, else the last one; helper nodes in it become ``path.op`` (``conv.pad`` for a
        reflect-padded conv). Ops in a non-leaf module are ``path.op`` (``layer1.0.add``), at the top level just
        ``op``. Repeats get ``:2``, ``:3`` ... (a ReLU module called twice).
        """
        used: set[str] = set()

        def unique(base: str) -> str:
            node_id, k = base, 1
            while node_id in used:
                k += 1
                node_id = f"{base}:{k}"
            used.add(node_id)
            return node_id

        runs: list[tuple[str, bool, list[tuple[Node, str]]]] = []
        for ir_node, key, leaf, short in self.id_info:
            if leaf and runs and runs[-1][1] and runs[-1][0] == key:
                runs[-1][2].append((ir_node, short))
            else:
                runs.append((key, leaf, [(ir_node, short)]))
        for key, leaf, items in runs:
            ops = [ir_node.op for ir_node, _ in items]
            if not leaf:
                for ir_node, short in items:
                    ir_node.id = unique(f"{key}.{short}" if key else short)
            elif len(set(ops)) == 1 and ops[0] not in LINEAR_TYPE:
                for ir_node, _ in items:  # the same activation module called several times in a row
                    ir_node.id = unique(key)
            else:
                main = next((i for i, op in enumerate(ops) if op in LINEAR_TYPE), len(items) - 1)
                for i, (ir_node, short) in enumerate(items):
                    ir_node.id = unique(key) if i == main else unique(f"{key}.{short}")

    def value_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        self.names.add(name)
        return name

    # -------------------------------------------------------------- IR building (used by converters)
    def emit(
        self,
        op: str,
        inputs: list[Act],
        attrs: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        *,
        value: torch.Tensor | None = None,
        name: str | None = None,
        tmp: bool = False,
        weight: str | None = None,
    ) -> Act:
        """Append an IR node reading ``inputs`` and return its output activation.

        The output's real value is the aten result (``value``, or the current call's single output) and the IR op is
        checked against it; with ``tmp`` the node is an intermediate step of a multi-node mapping and its value is
        the IR op's own result.
        """
        node = self.current
        if name is None:
            base = node.outputsAt(0).debugName() if node is not None else op
            name = f"{base}::{op}" if tmp else base
        name = self.value_name(name)
        tensor_params = {k: _to_param(v) for k, v in (params or {}).items()}
        ir_node = Node(
            id="",
            op=op,
            inputs=[a.name for a in inputs],
            outputs=[name],
            attrs=attrs or {},
            params=tensor_params,
            origin={
                "frontend": "torchscript",
                "ops": [node.kind()] if node is not None else [],
                "names": [self.module_path()],
                "source_output": None if tmp else name,
            },
        )
        if weight:
            ir_node.origin["weight"] = weight
        cast = {k: t.to(self.dtype) if t.is_floating_point() else t for k, t in tensor_params.items()}
        try:
            ours = run_node(ir_node, {a.name: a.value for a in inputs}, cast)
        except ModelError as exc:
            self.fail(f"IR op {op!r} cannot run here ({str(exc).split(': ', 1)[-1]})")
        if tmp:
            value = ours
        else:
            value = self.call.out if value is None else value
            self._check(op, ours, value)
        self.nodes.append(ir_node)
        short = node.kind().split("::")[-1].strip("_") if node is not None else op
        self.id_info.append((ir_node, *self.scope_key(weight), short))
        self.shapes[name] = tuple(value.shape)
        self.values[name] = value
        return Act(name, value)

    def _check(self, op: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
        """The emitted IR op must reproduce the aten result: |IR - aten| <= BUILD_RTOL * max |aten|."""
        if not isinstance(ref, torch.Tensor) or tuple(ours.shape) != tuple(ref.shape):
            got = tuple(ours.shape)
            self.fail(
                f"internal: IR op {op!r} gives shape {list(got)}, torch gives {list(getattr(ref, 'shape', ()))}"
            )
        if ref.numel() == 0:
            return
        ours = ours.to(ref.dtype)
        scale = float(torch.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0).abs().amax())
        tolerance = BUILD_RTOL.get(ref.dtype, 1e-4) * scale
        if not bool(torch.isclose(ours, ref, rtol=0.0, atol=tolerance, equal_nan=True).all()):
            worst = float(torch.nan_to_num((ours.double() - ref.double()).abs(), nan=float("inf")).amax())
            self.fail(
                f"internal: IR op {op!r} does not reproduce torch here (max abs diff {worst:.3g}, scale {scale:.3g})",
                FidelityError,
            )

    def alias(self, act: Act) -> Act:
        """A removed op (dropout, contiguous, dtype casts): the output is the input's IR value."""
        value = self.call.out if self.call is not None else act.value
        return Act(act.name, value)

    def new_input(self, name: str, tensor: torch.Tensor) -> Act:
        self.names.add(name)
        self.shapes[name] = tuple(tensor.shape)
        self.values[name] = tensor
        return Act(name, tensor)

    # -------------------------------------------------------------- interpretation
    def read(self, value: torch._C.Value) -> Any:
        uid = value.unique()
        if uid in self.stale:
            self.fail(
                f"reads {value.debugName()!r} after an in-place op ({self.stale[uid]}) changed it through a view; "
                "lrpaudit cannot follow mutation through aliases"
            )
        if uid not in self.env:
            self.fail(f"internal: value {value.debugName()!r} is read before it is defined", ModelError)
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
        self.current, self.call = node, None
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
        fn = CONVERTERS.get(kind[:-1] if _inplace(schema) else kind)
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
        self.call = Call(node, kind, schema, args, out, qualnames)
        try:
            result = fn(self, self.call)
        except Refuse as exc:
            self.fail(str(exc))
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
        """Run the op for real; in-place variants run out of place (unless ``in_place``), so no activation is
        overwritten."""
        name, overload = schema.name, schema.overload_name
        namespace, short = name.split("::")
        if short == "is_grad_enabled":
            return True  # generic code paths, as under autograd; reference runs under no_grad
        if not in_place and _inplace(schema) and short.endswith("_") and not short.endswith("__"):
            short = short[:-1]
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


def _to_param(value: Any) -> torch.Tensor:
    tensor = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if tensor.is_floating_point():
        return tensor.to(device="cpu", dtype=torch.float64).clone()
    if tensor.dtype == torch.bool:
        return tensor.cpu().clone()
    return tensor.to(device="cpu", dtype=torch.int64).clone()


def interpret(
    module: Any, path: str, feeds: dict[str, torch.Tensor], dtype: torch.dtype
) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Interpret ``module.forward`` on ``feeds`` (tensors by forward argument name): the raw IR, and the real
    (aten) value of every IR value."""
    graph = module.inlined_graph
    ctx = Context(module=module, path=path, dtype=dtype)
    graph_inputs = list(graph.inputs())
    ctx.bind(graph_inputs[0], module)
    schema_args = module.forward.schema.arguments[1:]
    names = []
    for value, arg in zip(graph_inputs[1:], schema_args):
        if arg.name in feeds:
            ctx.bind(value, ctx.new_input(arg.name, feeds[arg.name]))
            names.append(arg.name)
        elif arg.has_default_value():
            ctx.bind(value, arg.default_value)
        else:
            raise ModelError(f"{path}: forward argument {arg.name!r} ({arg.type}) has no value")
    with torch.no_grad():
        results = ctx.run_block(graph.block())
    ctx.assign_ids()
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
        if not isinstance(item, Act):
            raise ModelError(
                f"{path}: output {index} ({type(item).__name__}) does not depend on the model input"
            )
        outputs.append(item.name)
    ir = Graph(
        inputs=names,
        outputs=outputs,
        nodes=ctx.nodes,
        shapes=dict(ctx.shapes),
        input_dtypes={name: str(feeds[name].dtype).replace("torch.", "") for name in names},
        source={"format": "torchscript", "path": path, "output_names": list(outputs)},
    )
    validate(ir)
    return ir, ctx.values
