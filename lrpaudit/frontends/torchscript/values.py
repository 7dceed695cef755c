"""The values a TorchScript graph is interpreted on, and the registries its handlers fill.

``Act`` is an activation (a value that depends on the model input), ``Poison`` a value lrpaudit cannot represent,
``Call`` an aten call as a converter sees it, and ``Refuse`` what a converter raises for a case it cannot map.
Everything else in the environment is a plain concrete value. Converters (``ops``, ``ops_shape``) register with
``@converter(kind, ...)`` into ``CONVERTERS``, the ``prim::`` handlers (``prims``) into ``PRIM_HANDLERS``; the
package imports them, and the interpreter looks them up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import UnsupportedOpError

# A converter takes the IR builder (``ctx``) and the call, and returns the call's result (an Act, or a tuple/list
# of them for multi-output ops).
Converter = Callable[[Any, "Call"], Any]
CONVERTERS: dict[str, Converter] = {}
# ``prim::`` node kind -> handler(interpreter, node).
PRIM_HANDLERS: dict[str, Callable[[Any, torch._C.Node], None]] = {}


def converter(*kinds: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for kind in kinds:
            CONVERTERS[kind] = fn
        return fn

    return deco


@dataclass(eq=False)
class Act:
    """An activation: a value that depends on the model input. ``name`` is its IR value, ``value`` the real tensor."""

    name: str
    value: torch.Tensor


@dataclass(eq=False)
class Tokens(Act):
    """Integer token ids from the model input ``source`` (possibly reshaped): no IR value; only an embedding lookup
    (or an order-keeping reshape, or a shape query) may read them. ``name`` is the source input's name."""

    source: str = ""


def has_tokens(value: Any) -> bool:
    if isinstance(value, Tokens):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_tokens(v) for v in value)
    return False


def first_tokens(value: Any) -> Tokens | None:
    if isinstance(value, Tokens):
        return value
    if isinstance(value, (list, tuple)):
        return next((t for t in map(first_tokens, value) if t is not None), None)
    return None


@dataclass(eq=False)
class Poison:
    """A value lrpaudit cannot represent (e.g. max-pool indices); an op or output that uses it is an error."""

    message: str


def has_act(value: Any) -> bool:
    if isinstance(value, Act):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_act(v) for v in value)
    if isinstance(value, dict):
        return any(has_act(v) for v in value.values())
    return False


def real(value: Any) -> Any:
    """Replace activations by their real tensors (recursively in lists and tuples)."""
    if isinstance(value, Act):
        return value.value
    if isinstance(value, list):
        return [real(v) for v in value]
    if isinstance(value, tuple):
        return tuple(real(v) for v in value)
    return value


_SCHEMAS: dict[str, torch._C.FunctionSchema] = {}


def node_schema(node: torch._C.Node) -> torch._C.FunctionSchema | None:
    text = node.schema()
    if text == "(no schema)":
        return None
    if text not in _SCHEMAS:
        _SCHEMAS[text] = torch._C.parse_schema(text)
    return _SCHEMAS[text]


def find_poison(value: Any) -> Poison | None:
    """A Poison value travels through lists and tuples; any op that reads one fails with its message."""
    if isinstance(value, Poison):
        return value
    if isinstance(value, (list, tuple)):
        return next((p for p in map(find_poison, value) if p is not None), None)
    return None


def has_tensor(value: Any) -> bool:
    if isinstance(value, (torch.Tensor, Act)):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_tensor(v) for v in value)
    return False


@dataclass
class Call:
    """One aten node with an activation among its inputs, as a converter sees it."""

    node: torch._C.Node
    # The functional op's kind: an in-place variant (``aten::hardtanh_``) reaches its converter as
    # ``aten::hardtanh``, so converters compare kinds without caring; ``node.kind()`` is the original.
    kind: str
    schema: torch._C.FunctionSchema
    # By schema argument name; activations as Act.
    args: dict[str, Any]
    # The real (aten) result: a tensor, or a tuple/list for multi-output ops.
    out: Any
    # Argument name -> qualified name of the module attribute it reads (``features.0.weight``).
    qualnames: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    def const(self, name: str) -> Any:
        value = self.args.get(name)
        if has_act(value):
            raise Refuse(f"argument {name!r} must not depend on the model input")
        return value

    def act(self, name: str) -> Act:
        value = self.args.get(name)
        if not isinstance(value, Act):
            raise Refuse(f"argument {name!r} must be an activation")
        return value

    @property
    def positional(self) -> list[Any]:
        return [self.args[a.name] for a in self.schema.arguments if a.name in self.args]


class Refuse(Exception):
    """Raised inside converters and the IR builder; the interpreter turns it into an error of class ``cls`` (an
    UnsupportedOpError unless given; InternalError for a fault of lrpaudit's) naming the op, module and file."""

    def __init__(self, message: str, cls: type[Exception] = UnsupportedOpError) -> None:
        super().__init__(message)
        self.cls = cls
