"""IR building for the TorchScript interpreter. Converters call the builder ``ctx``: ``ctx.emit`` appends an IR
node and checks it against the real aten result, ``ctx.alias`` maps a removed op onto its input's IR value.

The builder raises ``Refuse`` for what it cannot build; the interpreter turns that into the error naming the op,
its module and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import InternalError, ModelError
from ...forward import run_node
from ...ir import Node, TokenInput
from .._tokens import token_misuse
from .naming import Naming, module_path
from .values import Act, Call, Refuse, Tokens

# Per-node build check: |IR op - aten op| relative to the aten output's scale, by the archive's dtype (float16 and
# bfloat16 ops round to 11 and 8 significant bits: a different but correct kernel differs by an ulp or two).
BUILD_RTOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@dataclass(eq=False)
class Builder:
    """The IR of one graph as it is built: its nodes, and the real value and shape of every IR value."""

    dtype: torch.dtype
    naming: Naming
    nodes: list[Node] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # The real (aten) value of every named activation.
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    # The aten call being converted; the interpreter sets it before it calls the converter.
    call: Call | None = None
    # The IR graph inputs in order: float model inputs and the outputs of token embedding lookups.
    inputs: list[str] = field(default_factory=list)
    token_inputs: list[TokenInput] = field(default_factory=list)

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
        node = self.call.node if self.call is not None else None
        tokens = next((a for a in inputs if isinstance(a, Tokens)), None)
        if tokens is not None:
            raise Refuse(token_misuse(tokens.source))
        if name is None:
            base = node.outputsAt(0).debugName() if node is not None else op
            name = f"{base}::{op}" if tmp else base
        name = self.naming.value_name(name)
        tensor_params = {k: to_param(v) for k, v in (params or {}).items()}
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
                "names": [module_path(node)],
                "source_output": None if tmp else name,
            },
        )
        if weight:
            ir_node.origin["weight"] = weight
        cast = {k: t.to(self.dtype) if t.is_floating_point() else t for k, t in tensor_params.items()}
        try:
            ours = run_node(ir_node, {a.name: a.value for a in inputs}, cast)
        except ModelError as exc:
            raise Refuse(f"IR op {op!r} cannot run here ({str(exc).split(': ', 1)[-1]})") from exc
        if tmp:
            value = ours
        else:
            value = self.call.out if value is None else value
            self._check(op, ours, value)
        self.nodes.append(ir_node)
        self.naming.record(ir_node, node, weight)
        self.shapes[name] = tuple(value.shape)
        self.values[name] = value
        return Act(name, value)

    def _check(self, op: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
        """The emitted IR op must reproduce the aten result: |IR - aten| <= BUILD_RTOL * max |aten|.

        Both sides ran on the same inputs, so a mismatch is a converter that mistranslated its op: a fault of
        lrpaudit's (InternalError, exit 3), not of the model.
        """
        if not isinstance(ref, torch.Tensor) or tuple(ours.shape) != tuple(ref.shape):
            got = tuple(ours.shape)
            raise Refuse(
                f"IR op {op!r} gives shape {list(got)}, torch gives {list(getattr(ref, 'shape', ()))}",
                InternalError,
            )
        if ref.numel() == 0:
            return
        ours = ours.to(ref.dtype)
        scale = float(torch.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0).abs().amax())
        tolerance = BUILD_RTOL.get(ref.dtype, 1e-4) * scale
        if not bool(torch.isclose(ours, ref, rtol=0.0, atol=tolerance, equal_nan=True).all()):
            worst = float(torch.nan_to_num((ours.double() - ref.double()).abs(), nan=float("inf")).amax())
            raise Refuse(
                f"IR op {op!r} does not reproduce torch here (max abs diff {worst:.3g}, scale {scale:.3g})",
                InternalError,
            )

    def alias(self, act: Act) -> Act:
        """A removed op (dropout, contiguous, dtype casts): the output is the input's IR value."""
        value = self.call.out if self.call is not None else act.value
        if isinstance(act, Tokens):
            return Tokens(act.name, value, act.source)
        return Act(act.name, value)

    def new_input(self, name: str, tensor: torch.Tensor) -> Act:
        """A model input: an activation named after its forward argument."""
        self.naming.names.add(name)
        self.shapes[name] = tuple(tensor.shape)
        self.values[name] = tensor
        self.inputs.append(name)
        return Act(name, tensor)

    def embed(self, tokens: Tokens, table: torch.Tensor) -> Act:
        """The lookup ``table[ids]`` (the current call's output): a new IR graph input, computed per batch."""
        base = (
            self.call.node.outputsAt(0).debugName() if self.call is not None else f"{tokens.source}.embedded"
        )
        name = self.naming.value_name(base)
        act = self.new_input(name, self.call.out)
        index_shape = tuple(tokens.value.shape)
        self.token_inputs.append(TokenInput(tokens.source, name, to_param(table), index_shape))
        return act


def to_param(value: Any) -> torch.Tensor:
    """A constant as an IR param, on the CPU: floating point in its own precision (the archive's; a float64 audit
    casts it, ``forward.cast_params``), int64 for integers. A copy: the module keeps its own tensors."""
    if isinstance(value, float):  # a Python scalar is a double: not torch's float32 default
        return torch.tensor(value, dtype=torch.float64)
    tensor = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if tensor.is_floating_point():
        return tensor.to(device="cpu").clone()
    if tensor.dtype == torch.bool:
        return tensor.cpu().clone()
    return tensor.to(device="cpu", dtype=torch.int64).clone()
