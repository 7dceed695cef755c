"""The torch module each ONNX node ran in, where the exporter recorded it, so ONNX ids match TorchScript's.

* The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) stores the module call stack of every node in its
  ``pkg.torch.onnx.name_scopes`` metadata: ``['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d_3']`` (full
  paths, then the FX node's name, whose op is ``conv2d``).
* The legacy exporter (``dynamo=False``) encodes it in the node name: ``/layer1/layer1.0/conv1/Conv``. Each scope
  is the module's name from its last non-numeric part (``layer1.0``, ``conv1``, ``block.0.0``), so the full path is
  rebuilt scope by scope. A module called a second time gets its scope suffixed (``relu_1``), exactly as a module
  *named* ``relu_1`` would: ``X_N`` is read as a repeat of ``X`` when a scope ``X`` exists beside it.

Files without either (hand-built, other exporters, the onnx model zoo) keep their node names as ids. Names are
data from the file: only the characters of Python identifiers and dots are accepted, anything else is ignored.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
# Module names: the characters of identifiers and ``-`` (``block1-0`` in torchvision's RegNet), dot-separated.
_PART = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_REPEAT = re.compile(r"(.+)_(\d+)")


@dataclass(frozen=True)
class Scope:
    """The module an ONNX node ran in (``""``: the top level)."""

    path: str


def node_scopes(model: onnx.ModelProto) -> list[Scope | None]:
    """One entry per node of the main graph: its scope, or None where the file records none."""
    nodes = list(model.graph.node)
    dynamo = [_dynamo_scope(node) for node in nodes]
    if any(scope is not None for scope in dynamo):
        return _created_by_the_optimizer(nodes, dynamo)
    chains = [_legacy_chain(node) for node in nodes]
    raw = {path for chain in chains if chain for path in chain}
    return [None if chain is None else _legacy_scope(chain, raw) for chain in chains]


def _created_by_the_optimizer(nodes: list[onnx.NodeProto], scopes: list[Scope | None]) -> list[Scope | None]:
    """Nodes the exporter's optimizer created carry no metadata (a ``Split`` it made of ``chunk``'s slices): they
    go to the deepest module that holds all their readers (with one reader, that reader's parent module)."""
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(k)
    filled = list(scopes)
    for k, node in enumerate(nodes):
        if scopes[k] is not None:
            continue
        paths = [scopes[r].path for out in node.output for r in readers.get(out, []) if scopes[r] is not None]
        if not paths:
            continue
        if len(paths) == 1:
            filled[k] = Scope(_parent(paths[0]))
            continue
        common = paths[0].split(".")
        for path in paths[1:]:
            parts = path.split(".")
            n = 0
            while n < min(len(common), len(parts)) and common[n] == parts[n]:
                n += 1
            common = common[:n]
        filled[k] = Scope(".".join(common))
    return filled


def non_leaf_paths(scopes: list[Scope | None]) -> set[str]:
    """Module paths that contain another path (their child modules run ops), and the top level."""
    paths = {scope.path for scope in scopes if scope is not None}
    parents = {""}
    for path in paths:
        parts = path.split(".")
        parents.update(".".join(parts[:k]) for k in range(1, len(parts)))
    return parents


def weight_owner(path: str, weight: str | None) -> str | None:
    """The module that owns a node's weight initializer (``layer1.0.conv1`` for ``layer1.0.conv1.weight``), when
    it is the scope itself or a sibling of it: an exporter that fused a BatchNorm into its convolution records the
    BatchNorm's scope on the fused node."""
    if not weight or not weight.endswith(".weight") or not _PART.fullmatch(weight):
        return None
    owner = weight[: -len(".weight")]
    if owner == path or _parent(owner) == _parent(path):
        return owner
    return None


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _dynamo_scope(node: onnx.NodeProto) -> Scope | None:
    text = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
    if text is None or len(text) > 4096:
        return None
    try:
        scopes = ast.literal_eval(text)  # a list of string literals; literal_eval evaluates no code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        return None
    modules = [s for s in scopes[:-1] if s]  # the last entry is the FX node's own name
    if not all(_PART.fullmatch(s) for s in modules):
        return None
    return Scope(modules[-1] if modules else "")


def _legacy_chain(node: onnx.NodeProto) -> list[str] | None:
    """The scopes of a legacy-exporter node name ``/a/a.0/b/OpType[_N]``, or None if it is not one."""
    name = node.name
    if not name.startswith("/"):
        return None
    *scopes, last = name[1:].split("/")
    if last != node.op_type and not re.fullmatch(re.escape(node.op_type) + r"_\d+", last):
        return None
    if not all(_PART.fullmatch(s) for s in scopes):
        return None
    return _full_paths(scopes)


def _full_paths(scopes: list[str]) -> list[str]:
    """Each scope's full module path: ``['features', 'features.1', 'block', 'block.0']`` ->
    ``['features', 'features.1', 'features.1.block', 'features.1.block.0']``."""
    paths: list[str] = []
    for scope in scopes:
        head, *tail = scope.split(".")
        current = paths[-1].split(".") if paths else []
        # ``head.n1.n2``: ``head`` is an attribute of an ancestor; the numeric parts are Sequential/ModuleList
        # children between it and this module. Find ``head`` where the path so far continues into this scope.
        for k in range(len(current) - 1, -1, -1):
            if current[k] == head and current[k + 1 :] == tail[: len(current) - k - 1]:
                paths.append(".".join(current[:k] + [head, *tail]))
                break
        else:
            paths.append(".".join(current + [head, *tail]))
    return paths


def _legacy_scope(chain: list[str], raw: set[str]) -> Scope:
    """The scope with repeat suffixes resolved (``relu_1`` beside ``relu`` is the second call of ``relu``)."""
    path, raw_parent = "", ""
    for full in chain:  # each full path extends the one before it
        parts = (full[len(raw_parent) + 1 :] if raw_parent else full).split(".")
        match = _REPEAT.fullmatch(parts[0])
        if match and (f"{raw_parent}.{match.group(1)}" if raw_parent else match.group(1)) in raw:
            parts[0] = match.group(1)
        path = ".".join([path, *parts]) if path else ".".join(parts)
        raw_parent = full
    return Scope(path)
