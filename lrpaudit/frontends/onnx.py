"""The ONNX frontend: a model file -> canonical IR, plus onnxruntime as the reference for fidelity checks."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import InputError, LrpauditError, ModelError
from ..inputs.shapes import check_declared
from ..ir import Graph
from ..passes import canonicalize
from .onnx_convert import convert_graph, declared_input_shapes
from .onnx_file import default_opset, read_onnx


def file_sha256(path: str | Path) -> str:
    """The file's sha256, hashed once per (path, size, modification time): big models are audited repeatedly."""
    stat = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class OnnxModel:
    """A loaded ONNX file. ``graph(shapes)`` gives the canonical IR specialized on concrete input shapes."""

    path: Path
    proto: onnx.ModelProto
    format: str = "onnx"
    _graphs: dict[tuple, Graph] = field(default_factory=dict, repr=False)
    _session: object | None = field(default=None, repr=False)

    @property
    def opset(self) -> int:
        return default_opset(self.proto)

    @property
    def input_names(self) -> list[str]:
        return list(declared_input_shapes(self.proto))

    def declared_shapes(self) -> dict[str, list[int | str | None]]:
        return check_declared(declared_input_shapes(self.proto), self.path)

    def sha256(self) -> str:
        return file_sha256(self.path)

    def graph(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        """Canonical IR for these input shapes (cached)."""
        key = tuple(sorted((name, tuple(shape)) for name, shape in shapes.items()))
        if key not in self._graphs:
            self._check_shapes(shapes)
            try:
                raw = convert_graph(self.proto, self.path, {k: tuple(v) for k, v in shapes.items()})
                self._graphs[key] = canonicalize(raw)
            except LrpauditError:
                raise
            except Exception as exc:  # a malformed model the checker let through, or else a bug (exit 3)
                problem = _inference_problem(self.proto)
                if problem is None:
                    raise
                raise ModelError(f"{self.path}: invalid ONNX model: {problem}") from exc
        return self._graphs[key]

    def _check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, declared in self.declared_shapes().items():
            if name not in shapes:
                raise InputError(f"{self.path}: no input given for graph input {name!r}")
            got = tuple(shapes[name])
            if len(declared) != len(got):
                raise InputError(
                    f"{self.path}: input {name!r} expects rank {len(declared)} {_fmt(declared)}, got shape {list(got)}"
                )
            for want, have in zip(declared, got):
                if isinstance(want, int) and want != have:
                    raise InputError(
                        f"{self.path}: input {name!r} expects shape {_fmt(declared)}, got {list(got)}"
                    )

    def reference_outputs(
        self, feeds: dict[str, np.ndarray], names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run onnxruntime with graph optimizations disabled; ``names`` promotes intermediates to outputs."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        if names:
            session = self._open_session(_with_outputs(self.proto, names), options)
        else:
            if self._session is None:
                self._session = self._open_session(self.proto, options)
            session = self._session
        wanted = [o.name for o in session.get_outputs()]
        types = {i.name: i.type for i in session.get_inputs()}
        dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
        feeds = {k: np.asarray(v, dtype=dtypes.get(types.get(k, ""), np.float32)) for k, v in feeds.items()}
        try:
            results = session.run(wanted, feeds)
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime failed: {_ort_message(exc)}") from exc
        return dict(zip(wanted, results))

    def _open_session(self, proto: onnx.ModelProto, options):
        """An onnxruntime session on CPU; a model it cannot load is a ModelError naming the file."""
        import onnxruntime as ort

        try:
            return ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime cannot load the model: {_ort_message(exc)}") from exc


def _inference_problem(model: onnx.ModelProto) -> str | None:
    """What strict ONNX shape inference finds wrong with the model (wrong input counts, types, shapes), if anything."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        text = str(exc).strip()
        return text.splitlines()[0][:300] if text else type(exc).__name__
    return None


def _ort_message(exc: BaseException) -> str:
    """The first line of an onnxruntime error without its ``[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED :`` prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^/\S+:\d+ [^)]*\)\s*", "", text)  # the C++ source location and signature
    return text[:300]


def _fmt(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model with extra tensors promoted to graph outputs (types from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name in present:
            continue
        present.add(name)
        info = infos.get(name)
        if info is None or not info.type.tensor_type.elem_type:
            info = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        copy.graph.output.append(info)
    return copy


def load_onnx(path: str | Path) -> OnnxModel:
    """Read and check an ONNX file; conversion to IR happens per input shape in ``OnnxModel.graph``."""
    path = Path(path)
    return OnnxModel(path=path, proto=read_onnx(path))
