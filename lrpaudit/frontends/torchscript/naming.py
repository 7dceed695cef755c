"""Names in the IR built from a TorchScript graph: value names, node ids from the module hierarchy, and the place
of an op in error messages.

Node ids are a user-visible contract: configs match them and reports print them. A node is named after the module
it ran in (``layer1.0.conv1``), as ``module_ids.assign_ids`` describes (the ONNX frontend names nodes the same way
where the file records module paths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ...ir import Node

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


def module_path(node: torch._C.Node | None) -> str:
    """The dotted path of the module the node ran in (``layer1.0.conv1``); ``""`` at the top level."""
    return ".".join(name for name, _ in module_scope(node)) if node is not None else ""


def where(module: Any, node: torch._C.Node | None) -> str:
    """The op and the module it ran in, for error messages: ``aten::foo in module 'features.0' (Conv2d)``."""
    if node is None:
        return "graph"
    scope = module_scope(node)
    if scope:
        place = f"module {'.'.join(n for n, _ in scope)!r} ({scope[-1][1]})"
    else:
        place = f"the root module ({getattr(module, 'original_name', type(module).__name__)})"
    return f"{node.kind()} in {place}"


@dataclass(eq=False)
class Naming:
    """Value names and the module of every node of one graph (ids are given once every node exists)."""

    module: Any
    names: set[str] = field(default_factory=set)
    # The next suffix to try per base name: a name repeated n times costs O(n), not O(n^2), to number.
    next_suffix: dict[str, int] = field(default_factory=dict)
    leaf_paths: set[str] = field(default_factory=set)
    # Module path -> its type name, for every submodule.
    types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, sub in self.module.named_modules():
            self.types[name] = getattr(sub, "original_name", type(sub).__name__)
        parents = {p.rsplit(".", 1)[0] if "." in p else "" for p in self.types if p}
        self.leaf_paths = {p for p in self.types if p and p not in parents}

    def resolve(self, node: torch._C.Node | None) -> str:
        """The node's full module path. The recorded call stack skips containers that are iterated, not called
        (``for block in self.blocks``: a ModuleList or ModuleDict), so ``0`` under the root is ``blocks.0`` when
        that is the only such path."""
        current = ""
        for name, _ in module_scope(node) if node is not None else []:
            direct = f"{current}.{name}" if current else name
            if direct not in self.types:
                prefix = f"{current}." if current else ""
                found = [
                    path
                    for path in self.types
                    if path.startswith(prefix)
                    and path.endswith(f".{name}")
                    and self._containers_between(current, path)
                ]
                direct = found[0] if len(found) == 1 else direct
            current = direct
        return current

    def _containers_between(self, outer: str, inner: str) -> bool:
        """Whether every module strictly between ``outer`` and ``inner`` is a ModuleList/ModuleDict."""
        parts = inner.split(".")
        start = len(outer.split(".")) if outer else 0
        between = [".".join(parts[:k]) for k in range(start + 1, len(parts))]
        return bool(between) and all(self.types.get(p) in ("ModuleList", "ModuleDict") for p in between)

    def value_name(self, base: str) -> str:
        """A fresh IR value name: ``base``, else ``base#2``, ``base#3`` ..."""
        name, k = base, self.next_suffix.get(base, 1)
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        self.next_suffix[base] = k
        self.names.add(name)
        return name

    def scope_key(self, node: torch._C.Node | None, weight: str | None) -> tuple[str, bool]:
        """Where the op belongs: ``(module path, is_leaf)``; a weight's owner stands in for a leaf."""
        path = self.resolve(node)
        if path in self.leaf_paths:
            return path, True
        if weight:
            return (weight.rsplit(".", 1)[0] if "." in weight else weight), True
        return path, False

    def record(self, ir_node: Node, node: torch._C.Node | None, weight: str | None) -> None:
        """Note the module an emitted IR node ran in (``origin["module"]``, ``origin["leaf"]``), from which
        ``module_ids.assign_graph_ids`` names it once all nodes exist."""
        ir_node.origin["module"], ir_node.origin["leaf"] = self.scope_key(node, weight)
