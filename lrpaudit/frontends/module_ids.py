"""Node ids from the module hierarchy, the same for every format a torch model is saved in.

Node ids are a user-visible contract: configs match them, reports print them, and a baseline from one file gates
its twin in another format only if both give their layers the same ids. Each frontend says, per IR node in emit
order, which module the node ran in (its module path, such as ``layer1.0.conv1``, and whether that module is a
leaf, i.e. has no child modules that run ops); this module turns that into ids once all nodes exist.

Frontends record it in ``origin["module"]`` (the path; None where the file records none, and the node keeps its
``origin["node_name"]``) and ``origin["leaf"]``. Ids are given to the raw graph and given again after the passes
(``frontends/_model.py``), so nodes the passes remove or merge (a BatchNorm folded into its convolution, nested
concatenations, an exporter's decomposed SiLU) leave no trace in the numbering: what one exporter writes as two
nodes and another as one gets the same ids. Ops outside
a leaf are named by their IR op (``layer1.0.add``, ``reshape``), the vocabulary every format shares: torch's
``flatten`` is ``Flatten`` in a legacy ONNX file and ``view`` in a dynamo one, but ``reshape`` in all three. The TorchScript frontend reads the module call stack recorded in the
graph; the ONNX frontend reads what the exporters record (``onnx/scopes.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..ir import LINEAR_TYPE, Graph, Node


@dataclass
class IdEntry:
    """Where one IR node came from; ``short`` names it inside its module (its IR op). ``verbatim`` entries have no
    module path: ``scope`` is the id itself (made unique with ``:2``, ``:3`` ... like every id)."""

    node: Node
    scope: str
    leaf: bool
    short: str
    verbatim: bool = False


def assign_ids(entries: Sequence[IdEntry]) -> None:
    """Set ``entry.node.id`` for every entry (in emit order).

    A leaf module's call (a run of consecutive nodes from the same leaf) gives its path to its main node: the first
    linear-type node, else the last one; helper nodes in it become ``path.op`` (``conv.pad`` for a reflect-padded
    conv). Ops in a non-leaf module are ``path.op`` (``layer1.0.add``), at the top level just ``op``. Repeats get
    ``:2``, ``:3`` ... (a ReLU module called twice). ``op`` is the IR op.
    """
    used: set[str] = set()
    next_suffix: dict[str, int] = {}  # per base id: a name repeated n times costs O(n) to number, not O(n^2)

    def unique(base: str) -> str:
        node_id, k = base, next_suffix.get(base, 1)
        while node_id in used:
            k += 1
            node_id = f"{base}:{k}"
        next_suffix[base] = k
        used.add(node_id)
        return node_id

    runs: list[tuple[IdEntry, list[IdEntry]]] = []
    for entry in entries:
        last = runs[-1][0] if runs else None
        if (
            entry.leaf
            and not entry.verbatim
            and last is not None
            and last.leaf
            and not last.verbatim
            and last.scope == entry.scope
        ):
            runs[-1][1].append(entry)
        else:
            runs.append((entry, [entry]))
    for head, items in runs:
        key = head.scope
        ops = [item.node.op for item in items]
        if head.verbatim:
            for item in items:
                item.node.id = unique(key)
        elif not head.leaf:
            for item in items:
                item.node.id = unique(f"{key}.{item.short}" if key else item.short)
        elif len(set(ops)) == 1 and ops[0] not in LINEAR_TYPE:
            for item in items:  # the same activation module called several times in a row
                item.node.id = unique(key)
        else:
            main = next((i for i, op in enumerate(ops) if op in LINEAR_TYPE), len(items) - 1)
            for i, item in enumerate(items):
                item.node.id = unique(key) if i == main else unique(f"{key}.{item.short}")


def assign_graph_ids(graph: Graph) -> None:
    """Ids for every node of ``graph`` from its ``origin["module"]`` and ``origin["leaf"]`` (see the module
    docstring); a node without a module path keeps its ``origin["node_name"]`` (or its current id)."""
    entries = []
    for node in graph.nodes:
        path = node.origin.get("module")
        if path is None:
            entries.append(
                IdEntry(node, node.origin.get("node_name") or node.id, True, node.op, verbatim=True)
            )
        else:
            entries.append(IdEntry(node, path, bool(node.origin.get("leaf")), node.op))
    assign_ids(entries)
