"""Shared helpers of the robustness and fuzz tests: tiny models, the CLI runner, the clean-failure assertion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lrpaudit.reports.schema_check import validate_report
from tests.helpers.cli import run_cli
from tests.helpers.onnx_builders import make_model

node = helper.make_node


def invoke(*args) -> object:
    """Run ``lrpaudit ARGS`` (stdout and stderr kept apart); never inherits a CI's GitHub variables."""
    return run_cli(*args)


def check(*args) -> object:
    return invoke("check", *args)


def no_traceback(result) -> None:
    """Exit 0/1/2 (never 3), no traceback, and no stray exception left in the runner."""
    assert result.exit_code in (0, 1, 2), f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def assert_one_line_error(result, *needles: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``lrpaudit: error:`` line on stderr mentioning every needle.

    Progress and warning lines (``lrpaudit: <model>: ...``, ``lrpaudit: warning: ...``) may precede it.
    """
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lrpaudit: error: ")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith("lrpaudit: ") for line in lines), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((4, 3)).astype(np.float32),
        "b1": rng.standard_normal(4).astype(np.float32),
        "W2": rng.standard_normal((2, 4)).astype(np.float32),
    }


def mlp(params: dict[str, np.ndarray] | None = None, batch=None, opset: int = 17) -> onnx.ModelProto:
    """x[?, 3] -> Gemm fc1 (bias) -> Relu -> Gemm fc2 (no bias) -> y[?, 2]."""
    nodes = [
        node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="fc1"),
        node("Relu", ["h"], ["r"], name="relu"),
        node("Gemm", ["r", "W2"], ["y"], transB=1, name="fc2"),
    ]
    return make_model(nodes, {"x": [batch, 3]}, ["y"], opset, params or weights())


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """x[?, 1, 6, 6] -> Conv -> BatchNorm -> Relu -> MaxPool -> Flatten -> Gemm -> y[?, 3]: many fields to mutate."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = {
        "cw": rng.standard_normal((2, 1, 3, 3)).astype(f32),
        "cb": rng.standard_normal(2).astype(f32),
        "scale": rng.uniform(0.5, 1.5, 2).astype(f32),
        "shift": rng.standard_normal(2).astype(f32),
        "mean": rng.standard_normal(2).astype(f32),
        "var": rng.uniform(0.5, 1.5, 2).astype(f32),
        "fw": rng.standard_normal((3, 8)).astype(f32),
        "fb": rng.standard_normal(3).astype(f32),
    }
    nodes = [
        node("Conv", ["x", "cw", "cb"], ["c"], name="conv", kernel_shape=[3, 3], pads=[0, 0, 0, 0]),
        node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], name="bn", epsilon=1e-5),
        node("Relu", ["n"], ["r"], name="relu"),
        node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    return make_model(nodes, {"x": [None, 1, 6, 6]}, ["y"], 17, inits)


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def write(model: onnx.ModelProto, path: Path) -> Path:
    """Serialize without onnx.save's checks or external-data handling (the bytes are what the test made)."""
    path.write_bytes(model.SerializeToString())
    return path


def externalize(model: onnx.ModelProto, location: str, index: int = 0) -> tuple[onnx.ModelProto, bytes]:
    """A copy whose ``index``-th initializer points at external data ``location``; returns the bytes it needs."""
    out = copy(model)
    tensor = out.graph.initializer[index]
    raw = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return out, raw


def model_file(folder: Path, model: onnx.ModelProto, name: str = "model.onnx") -> Path:
    return write(model, folder / name)


def strict_json(text: str) -> dict:
    """Parse JSON refusing NaN/Infinity tokens (JSON has none), then validate against the shipped schema."""

    def refuse(token):
        raise AssertionError(f"bare {token} in the JSON report")

    report = json.loads(text, parse_constant=refuse)
    validate_report(report)
    return report


def save_npy(folder: Path, array, name: str = "in.npy") -> Path:
    """``array`` saved as ``folder/name`` as it is (object arrays pickled: the tests try those too)."""
    path = folder / name
    np.save(path, array, allow_pickle=True)
    return path
