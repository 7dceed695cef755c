"""Reading an ONNX file safely: existence, protobuf parsing, external data kept inside the model folder, checker."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from ..errors import ModelError


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
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph found in the protobuf)")
    folder = path.parent.resolve()
    for location in _external_locations(model):
        target = (folder / location).resolve()
        if folder not in target.parents and target != folder:
            raise ModelError(f"{path}: external data path {location!r} escapes the model's folder; refused")
        if not target.is_file():
            raise ModelError(f"{path}: external data file {location!r} is missing (expected at {target})")
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read external data ({_first_line(exc)})") from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{path}: invalid ONNX model: {_first_line(exc)}") from exc
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_opset(model: onnx.ModelProto) -> int:
    """The opset version of the default ONNX domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1
