"""The ONNX frontend: a model file -> canonical IR, plus onnxruntime as the reference for fidelity checks.

``file`` reads and checks the file, ``convert`` walks the graph and folds constants, the converters in
``ops_basic``, ``ops_layers`` and ``ops_shape`` map one op type each onto IR through ``context``, and ``runtime``
runs onnxruntime. Importing this package fills the converter registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ...errors import InputError, LrpauditError, ModelError
from ...inputs.shapes import check_declared
from ...ir import Graph
from .._model import ModelFile
from . import ops_attention, ops_basic, ops_layers, ops_shape  # noqa: F401  (fill the converter registry)
from .convert import convert_graph, declared_input_shapes, integer_inputs
from .file import default_opset, inference_problem, is_binary_onnx, read_onnx
from .runtime import Runtime


@dataclass
class OnnxModel(ModelFile):
    """A loaded ONNX file. ``graph(shapes)`` gives the canonical IR specialized on concrete input shapes."""

    path: Path
    proto: onnx.ModelProto
    format: str = "onnx"
    _graphs: dict[tuple, Graph] = field(default_factory=dict, repr=False)
    _runtime: Runtime | None = field(default=None, repr=False)
    # The proto is the file's content as onnxruntime reads it (binary protobuf, unmodified): its session opens the file.
    from_file: bool = field(default=False, repr=False)

    @property
    def opset(self) -> int:
        return default_opset(self.proto)

    @property
    def input_names(self) -> list[str]:
        return list(declared_input_shapes(self.proto))

    @property
    def integer_inputs(self) -> list[str]:
        """The inputs of integer type (token ids, audited from their embedding lookup)."""
        return integer_inputs(self.proto)

    def declared_shapes(self) -> dict[str, list[int | str | None]]:
        return check_declared(declared_input_shapes(self.proto), self.path)

    def raw_graph(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        return convert_graph(self.proto, self.path, {k: tuple(v) for k, v in shapes.items()})

    def _canonical(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        self._check_shapes(shapes)
        try:
            return super()._canonical(shapes)
        except LrpauditError:
            raise
        except Exception as exc:
            # A malformed model the checker let through, or else a bug (exit 3).
            problem = inference_problem(self.proto)
            if problem is None:
                raise
            raise ModelError(f"{self.path}: invalid ONNX model: {problem}") from exc

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
        if self._runtime is None:
            self._runtime = Runtime(self.proto, self.path, self.from_file)
        return self._runtime.run(feeds, names)


def _fmt(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def load_onnx(path: str | Path) -> OnnxModel:
    """Read and check an ONNX file; conversion to IR happens per input shape in ``OnnxModel.graph``."""
    path = Path(path)
    return OnnxModel(path=path, proto=read_onnx(path), from_file=is_binary_onnx(path))
