"""The classic model-zoo files that ship inside the onnx package (``onnx/backend/test/data/light/*.onnx``).

Opset 9 Caffe2 conversions (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19,
ZFNet-512) with every weight a ``ConstantOfShape`` fill, 224x224 inputs, old-style initializers listed as graph
inputs, Dropout nodes that declare a mask nobody reads, LRN, Sum, unnamed nodes (ids fall back to node names).

Oracles: onnxruntime (the forward check of the audit, batch 1); the accounting (no row unexplained or non-finite
under the default preset); conservation by construction under ``conservative`` (end-to-end leak <= 1e-12).
AlexNet, VGG-19 and ZFNet carry 60M..140M weights in their dense layers, DenseNet-121 and ResNet-50 have 120 and
53 convolutions at 224x224: they cost 4..25 s each and run in the ``slow``-marked test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from lrpaudit import AuditRequest, run_audit
from lrpaudit.frontends import load_model

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FILES = sorted(path.stem.removeprefix("light_") for path in LIGHT.glob("light_*.onnx"))
DENSE = ("bvlc_alexnet", "vgg19", "zfnet512")
# The costliest of the rest (120 and 53 convolutions at 224x224): also slow-marked.
LARGE = ("densenet121", "resnet50")


def test_every_light_model_is_tested():
    assert len(FILES) == 9 and set(DENSE) <= set(FILES)


def check(name: str) -> None:
    model = load_model(LIGHT / f"light_{name}.onnx")
    (input_name,) = model.input_names
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    default = run_audit(AuditRequest(model, inputs={input_name: x}))
    assert default.fidelity is not None and default.fidelity.passed
    assert not [row["id"] for row in default.layer_rows() if row["verdict"] in ("unexplained", "non_finite")]
    conservative = run_audit(
        AuditRequest(model, preset="conservative", inputs={input_name: x}, fidelity="off")
    )
    assert conservative.verdict == "pass"
    (sample,) = conservative.samples
    assert abs(sample.leak) <= 1e-12 * abs(sample.r_output)


@pytest.mark.parametrize("name", [n for n in FILES if n not in DENSE + LARGE])
def test_light_model(name):
    check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", DENSE + LARGE)
def test_light_model_large(name):
    check(name)
