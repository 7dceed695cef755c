"""Reading an ONNX file safely: existence, protobuf parsing, external data kept inside the model folder, checker."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from ...errors import ModelError, first_line
from ...files import check_regular


def _external_locations(model: onnx.ModelProto) -> list[str]:
    """Every external-data location referenced by the model's tensors."""
    locations = []
    for tensor in external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            locations.append(info.get("location", ""))
    return locations


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check an ONNX model; every failure is a ``ModelError`` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    check_regular(path, ModelError, "model file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph found in the protobuf)")
    _check_opset(model, path)
    check_structure(model.graph, path)
    _check_op_names(model, path)
    folder = path.parent.resolve()
    for location in _external_locations(model):
        target = (folder / location).resolve()
        if folder not in target.parents and target != folder:
            raise ModelError(f"{path}: external data path {location!r} escapes the model's folder; refused")
        check_regular(target, ModelError, "external data file", prefix=f"{path}: external data {location!r}")
        if not target.is_file():
            raise ModelError(f"{path}: external data file {location!r} is missing (expected at {target})")
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read external data ({first_line(exc)})") from exc
    checked = _without_deprecated(model)
    try:
        # the file itself where it is what the checker would see: checking a ModelProto serializes it first
        # (a second copy of every weight, about half the check's time on a large model)
        onnx.checker.check_model(str(path) if checked is model and is_binary_onnx(path) else checked)
    except Exception as exc:
        raise ModelError(f"{path}: invalid ONNX model: {first_line(exc)}") from exc
    return model


def is_binary_onnx(path: Path) -> bool:
    """Whether the checker and onnxruntime can read the file by its path as ``onnx.load`` read it: binary protobuf
    (by the extension) and a name they take (UTF-8: a name with undecodable bytes arrives with surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    fmt = onnx.serialization.registry.get_format_from_file_extension(path.suffix)
    return fmt in (None, "protobuf")


# Ops whose version in the model's opset the checker refuses as deprecated although the opset defines it (and
# onnxruntime runs it): GroupNormalization 18 (per-group scale and bias; opset 21 made them per channel).
_DEPRECATED = {"GroupNormalization": range(18, 21)}


def _without_deprecated(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model to check: a deprecated-but-defined node stands in as ``Identity`` of its first input, so that the
    checker validates everything else (its converter checks the node itself)."""
    opset = default_opset(model)
    if not any(n.op_type in _DEPRECATED and opset in _DEPRECATED[n.op_type] for n in model.graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if (
            node.op_type in _DEPRECATED
            and opset in _DEPRECATED[node.op_type]
            and node.domain in ("", "ai.onnx")
        ):
            first = node.input[0]
            del node.input[:]
            node.input.append(first)
            del node.attribute[:]
            node.op_type = "Identity"
    return copy


def _check_opset(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an opset newer than the installed onnx knows: its ops' meaning is unknown here."""
    known = onnx.defs.onnx_opset_version()
    opset = default_opset(model)
    if opset > known:
        raise ModelError(
            f"{path}: opset {opset} is newer than the installed onnx {onnx.__version__} knows (up to {known}); "
            "upgrade onnx and onnxruntime, or export with an older opset"
        )


def _check_op_names(model: onnx.ModelProto, path: Path) -> None:
    """An op type that no ONNX opset defines is named with its node (the checker's message does not name it)."""
    opset = default_opset(model)
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and not _is_onnx_op(node.op_type):
            raise ModelError(
                f"{path}: node {_label(node)}: unknown op {node.op_type!r} (not an ONNX operator; opset {opset})"
            )


def _is_onnx_op(op_type: str) -> bool:
    try:
        return onnx.defs.has(op_type)
    except Exception:  # a damaged name (not valid UTF-8) is no operator
        return False


def check_structure(graph: onnx.GraphProto, path: str | os.PathLike) -> None:
    """Outputs declared, every tensor name produced, no cycle: each named in one line (before the checker)."""
    initializers = {tensor.name for tensor in graph.initializer}
    if not [value for value in graph.input if value.name not in initializers]:
        raise ModelError(f"{path}: the graph declares no inputs (nothing to feed and explain)")
    if not graph.output:
        raise ModelError(f"{path}: the graph declares no outputs (nothing to explain)")
    produced = {value.name for value in graph.input} | initializers | {""}
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    for node in graph.node:
        for name in node.input:
            if name not in produced and name not in producer:
                raise ModelError(
                    f"{path}: node {_label(node)} reads tensor {name!r}, which no node, graph input or "
                    "initializer produces (a dangling name)"
                )
    for value in graph.output:
        if value.name not in produced and value.name not in producer:
            raise ModelError(f"{path}: graph output {value.name!r} is produced by no node (a dangling name)")
    cycle = _cycle(graph, produced, producer)
    if cycle:
        raise ModelError(f"{path}: the graph has a cycle (nodes left unordered: {', '.join(cycle)})")


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or (node.output[0] if node.output else '?')!r} ({node.op_type[:60]})"


def _cycle(graph: onnx.GraphProto, produced: set[str], producer: dict[str, int]) -> list[str]:
    """Labels of the nodes left over by Kahn's algorithm (those on or after a cycle); empty if acyclic."""
    waiting = [
        {producer[name] for name in node.input if name not in produced and name in producer}
        for node in graph.node
    ]
    readers: dict[int, list[int]] = {}
    for index, needs in enumerate(waiting):
        for need in needs:
            readers.setdefault(need, []).append(index)
    ready = [index for index, needs in enumerate(waiting) if not needs]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for reader in readers.get(index, []):
            waiting[reader].discard(index)
            if not waiting[reader]:
                ready.append(reader)
    if done == len(graph.node):
        return []
    return [_label(node) for node, needs in zip(graph.node, waiting) if needs][:5]


def default_opset(model: onnx.ModelProto) -> int:
    """The opset version of the default ONNX domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def inference_problem(model: onnx.ModelProto) -> str | None:
    """What strict ONNX shape inference finds wrong with the model (wrong input counts, types, shapes), if anything."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        return first_line(exc, 300)
    return None
