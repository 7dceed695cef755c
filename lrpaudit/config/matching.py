"""Node matchers shared by rule entries and tolerance overrides.

A match is a mapping of conditions that must all hold:

- ``op``: an IR op name or a list of them (``conv``, ``linear``, ``avgpool``, ...);
- ``name``: a glob on the node id (``fnmatch`` syntax, case-sensitive: ``classifier.*``, ``layer1.*.conv1``); ids
  are module paths wherever the file records them (TorchScript, and ONNX files from torch's exporters), else the
  ONNX node names;
- ``node_name``: a glob on the node's name in an ONNX file (``/features/features.4/Conv``; its first output's name
  when the node has none); TorchScript nodes have no name and never match it;
- ``index``: the node is the N-th (0-based) *weighted* node in graph order;
- ``position``: ``first`` or ``last`` weighted node in graph order (``first`` is the one nearest the input).

Weighted nodes are the ``linear``, ``conv`` and ``conv_transpose`` nodes. ``affine`` (a BatchNorm that could not
be folded into a neighbour) is linear-type (it needs a linear-type rule) but is *not counted* by ``index`` and
``position``: Zennit, whose composites the presets reproduce, does not count BatchNorm as a layer either, so
``{position: first}`` is the first dense or convolutional layer even when the model starts with a normalization.
``lrpaudit init`` lists each weighted node with its index.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..ir import WEIGHTED, Graph, Node


@dataclass(frozen=True)
class Matcher:
    """A validated ``match:`` mapping. An empty matcher matches every node."""

    ops: tuple[str, ...] | None = None
    name: str | None = None
    index: int | None = None
    position: str | None = None
    node_name: str | None = None

    @property
    def selects_by_op(self) -> bool:
        """Whether the match names the nodes' kind explicitly (op, index or position), not just a name glob."""
        return self.ops is not None or self.index is not None or self.position is not None

    def matches(self, node: Node, context: GraphContext) -> bool:
        if self.ops is not None and node.op not in self.ops:
            return False
        if self.name is not None and not fnmatch.fnmatchcase(node.id, self.name):
            return False
        if self.node_name is not None:
            file_name = node.origin.get("node_name")  # set by the ONNX frontend only
            if file_name is None or not fnmatch.fnmatchcase(file_name, self.node_name):
                return False
        if self.index is not None and context.index.get(node.id) != self.index:
            return False
        if self.position is not None:
            counted = context.counted
            if not counted:
                return False
            wanted = counted[0] if self.position == "first" else counted[-1]
            if node.id != wanted:
                return False
        return True

    def as_dict(self) -> dict:
        shown: dict = {}
        if self.ops is not None:
            shown["op"] = self.ops[0] if len(self.ops) == 1 else list(self.ops)
        for key in ("name", "node_name", "index", "position"):
            if getattr(self, key) is not None:
                shown[key] = getattr(self, key)
        return shown


@dataclass(frozen=True)
class GraphContext:
    """What matchers need to know about a graph: the weighted nodes in order and their indices."""

    counted: tuple[str, ...]
    index: dict[str, int]

    @classmethod
    def of(cls, graph: Graph) -> GraphContext:
        counted = tuple(node.id for node in graph.nodes if node.op in WEIGHTED)
        return cls(counted, {node_id: i for i, node_id in enumerate(counted)})
