"""Names in the IR built from a TorchScript graph: value names, node ids from the module hierarchy, and the place
of an op in error messages.

Node ids are a user-visible contract: configs match them and reports print them. A node is named after the module
it ran in (``layer1.0.conv1``), as ``assign_ids`` describes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ...ir import LINEAR_TYPE, Node

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
    """Value names and node ids for one graph. Ids are given at the end, once every node exists."""

    module: Any
    names: set[str] = field(default_factory=set)
    # The next suffix to try per base name: a name repeated n times costs O(n), not O(n^2), to number.
    next_suffix: dict[str, int] = field(default_factory=dict)
    # One entry per IR node, in emit order: (node, scope key, in a leaf module, short op name).
    pending: list[tuple[Node, str, bool, str]] = field(default_factory=list)
    leaf_paths: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        paths = [name for name, _ in self.module.named_modules()]
        parents = {p.rsplit(".", 1)[0] if "." in p else "" for p in paths if p}
        self.leaf_paths = {p for p in paths if p and p not in parents}

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
        path = module_path(node)
        if path in self.leaf_paths:
            return path, True
        if weight:
            return (weight.rsplit(".", 1)[0] if "." in weight else weight), True
        return path, False

    def record(self, ir_node: Node, node: torch._C.Node | None, weight: str | None) -> None:
        """Note an emitted IR node and the aten node it came from, to be named by ``assign_ids``."""
        short = node.kind().split("::")[-1].strip("_") if node is not None else ir_node.op
        self.pending.append((ir_node, *self.scope_key(node, weight), short))

    def assign_ids(self) -> None:
        """Node ids from the module hierarchy, given once all nodes exist.

        A leaf module's call (a run of consecutive nodes from the same leaf) gives its path to its main node: the
        first linear-type node, else the last one; helper nodes in it become ``path.op`` (``conv.pad`` for a
        reflect-padded conv). Ops in a non-leaf module are ``path.op`` (``layer1.0.add``), at the top level just
        ``op``. Repeats get ``:2``, ``:3`` ... (a ReLU module called twice).
        """
        used: set[str] = set()
        next_suffix: dict[str, int] = {}

        def unique(base: str) -> str:
            node_id, k = base, next_suffix.get(base, 1)
            while node_id in used:
                k += 1
                node_id = f"{base}:{k}"
            next_suffix[base] = k
            used.add(node_id)
            return node_id

        runs: list[tuple[str, bool, list[tuple[Node, str]]]] = []
        for ir_node, key, leaf, short in self.pending:
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
