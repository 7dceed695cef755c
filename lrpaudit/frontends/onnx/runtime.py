"""onnxruntime as the reference for the fidelity check: CPU only, graph optimizations off."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx

from ...errors import ModelError, first_line

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class Runtime:
    """onnxruntime sessions on one model; the session for its own outputs is opened once and kept (one per loaded
    model, whatever the number of batches compared).

    ``from_file``: the proto is the file's own content, so that session reads the file itself (no serialized copy
    of the weights in memory, and faster to open).
    """

    def __init__(self, proto: onnx.ModelProto, path: Path, from_file: bool = False) -> None:
        self.proto = proto
        self.path = path
        self.from_file = from_file
        self._session = None

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None) -> dict[str, np.ndarray]:
        """The model's outputs on ``feeds``; ``names`` promotes intermediates to outputs (a session of its own)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        if names:
            session = self._open(_with_outputs(self.proto, names), options)
        else:
            if self._session is None:
                self._session = self._open(str(self.path) if self.from_file else self.proto, options)
            session = self._session
        wanted = [o.name for o in session.get_outputs()]
        types = {i.name: i.type for i in session.get_inputs()}
        feeds = {k: np.asarray(v, dtype=_DTYPES.get(types.get(k, ""), np.float32)) for k, v in feeds.items()}
        try:
            results = session.run(wanted, feeds)
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime failed: {_ort_message(exc)}") from exc
        return dict(zip(wanted, results))

    def _open(self, model: onnx.ModelProto | str, options):
        """An onnxruntime session on CPU (on a proto, or a file by path); a model it cannot load is a ModelError
        naming the file."""
        import onnxruntime as ort

        source = model if isinstance(model, str) else model.SerializeToString()
        try:
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"{self.path}: onnxruntime cannot load the model: {_ort_message(exc)}") from exc


def _ort_message(exc: BaseException) -> str:
    """The first line of an onnxruntime error without its ``[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED :`` prefix."""
    # Uncut: the prefixes go before the cut to 300 characters.
    text = first_line(exc, len(str(exc)))
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    # The C++ source location and signature.
    text = re.sub(r"^/\S+:\d+ [^)]*\)\s*", "", text)
    return text[:300]


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
