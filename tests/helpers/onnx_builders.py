"""Helpers for tests that build small ONNX models with ``onnx.helper`` and use onnxruntime as the oracle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from lrpaudit.forward import run_forward
from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.ir import Graph
from tests.helpers.numeric import rel_diff


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int]],
    outputs: Sequence[str],
    opset: int,
    inits: Mapping[str, np.ndarray] | None = None,
    inits_as_inputs: bool = False,
    ir_version: int | None = None,
    output_types: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    """A float32 model over the given nodes; ``inits_as_inputs`` also lists initializers as graph inputs.

    Output shapes come from onnx shape inference (the checker requires them).
    """
    inits = dict(inits or {})
    value_infos = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in inputs.items()
    ]
    if inits_as_inputs:
        value_infos += [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
            for name, a in inits.items()
        ]
    graph = helper.make_graph(
        list(nodes),
        "test",
        value_infos,
        [
            helper.make_tensor_value_info(name, (output_types or {}).get(name, TensorProto.FLOAT), None)
            for name in outputs
        ],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in inits.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    if ir_version is None:
        ir_version = 3 if opset < 7 else helper.find_min_ir_version_for(opsets)
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    return onnx.shape_inference.infer_shapes(model)  # gives the outputs their (required) shapes


def ort_run(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime outputs with graph optimizations disabled."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    onnx.save(model, str(path))
    return path


def ir_outputs(
    path: Path, feeds: Mapping[str, np.ndarray], dtype: torch.dtype = torch.float32, raw: bool = False
):
    """(graph, list of IR output tensors) for the file at ``path`` on these feeds; ``raw``: the converters' IR
    before the passes (for models that are not auditable per sample, such as one whose output merges the batch)."""
    model = load_onnx(path)
    shapes = {name: tuple(a.shape) for name, a in feeds.items()}
    graph = model.raw_graph(shapes) if raw else model.graph(shapes)
    values = run_forward(graph, {name: torch.from_numpy(np.asarray(a)) for name, a in feeds.items()}, dtype)
    return graph, [values[name] for name in graph.outputs]


def check_against_ort(
    tmp_path: Path,
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    rtol: float = 1e-5,
    raw: bool = False,
) -> Graph:
    """Load ``model`` through lrpaudit, run the IR in float32 and float64, and compare both with onnxruntime."""
    path = save(model, tmp_path)
    refs = ort_run(model, feeds)
    for dtype in (torch.float32, torch.float64):
        graph, ours = ir_outputs(path, feeds, dtype, raw)
        assert len(ours) == len(refs)
        for out, ref in zip(ours, refs):
            assert rel_diff(out, ref) <= rtol
    return graph


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
