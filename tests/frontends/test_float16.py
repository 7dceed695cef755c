"""float16 model files are audited: the forward check's tolerance follows the file's precision.

A float16 file computes every op in 11 significant bits, so onnxruntime (or the ScriptModule) differs from the IR's
float32 forward by ~1e-4..1e-3 of the scale: above the float32 tolerance 1e-4, which refused every such file.
Oracles: (1) the measured deviation is above 1e-4 (the old tolerance would refuse) and below the float16 floor
1e-2; (2) the float64 audit of the float16 file is the audit of the function its weights define: its input
relevance equals, to rounding, that of the float32 export of the same model with the same (float16-rounded) weights;
(3) a deviation above the floor is still refused, and the message says the file's precision set the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrpaudit import AuditRequest, run_audit
from lrpaudit.errors import FidelityError
from lrpaudit.fidelity import FILE_PRECISION_RTOL, check_fidelity
from lrpaudit.frontends import load_model
from tests.frontends.test_torchscript import save_torchscript
from tests.helpers.reference_models import build, export_onnx

SHAPE = (2, 3, 16, 16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same BatchNorm CNN as float16 legacy ONNX, float16 traced TorchScript, and float32 ONNX of the
    float16-rounded weights (BatchNorm kept as nodes: no exporter folding in either precision)."""
    folder = tmp_path_factory.mktemp("float16")
    half = build("cnn_bn", seed=3).half()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).half()
    return {
        "onnx": export_onnx(half, x, folder / "half.onnx", dynamo=False, opset=17, fold=False),
        "torchscript": save_torchscript(half, x, folder / "half.pt", "traced", no_grad=True),
        "float32": export_onnx(
            half.float(), x.float(), folder / "rounded.onnx", dynamo=False, opset=17, fold=False
        ),
    }


def input_map(result) -> np.ndarray:
    (name,) = [k for k in result.relevance if k not in ("targets", "output_relevance")]
    return result.relevance[name]


def audit(path, inputs):
    return run_audit(AuditRequest(path, preset="conservative", inputs=inputs, keep_relevance=True))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_float16_file_is_audited_as_the_function_of_its_weights(files, fmt):
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)).half().float().numpy()
    result = audit(files[fmt], x)
    assert result.fidelity.tolerance == FILE_PRECISION_RTOL["float16"]
    assert 1e-4 < result.fidelity.max_rel_diff < 1e-2
    reference = audit(files["float32"], x)
    assert reference.fidelity.tolerance == 1e-4
    ours, theirs = input_map(result), input_map(reference)
    assert np.abs(ours - theirs).max() <= 1e-10 * np.abs(theirs).max()
    assert result.verdict == reference.verdict == "pass"


def test_a_deviation_above_the_float16_floor_is_refused_naming_the_precision(files, monkeypatch):
    model = load_model(files["onnx"])
    graph = model.graph({"x": SHAPE})
    assert graph.input_dtypes == {"x": "float16"}
    feeds = {"x": np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)}
    honest = model.reference_outputs
    monkeypatch.setattr(
        model, "reference_outputs", lambda f, n=None: {k: 1.05 * v for k, v in honest(f, n).items()}
    )
    with pytest.raises(FidelityError, match=r"> tolerance 0\.01 \(set by the file's float16 precision\)"):
        check_fidelity(model, graph, feeds)
