"""torchvision's CNN families in reduced configurations of the same classes and blocks, with seeded random weights
and randomized BatchNorm statistics, and their files in the three formats a user exports.

Each entry is ``name -> (factory, input side)``; the input is ``(1, 3, side, side)``, the smallest (or nearly) each
family accepts. Reductions keep the family's own classes: fewer stages or blocks (``ResNet(..., [1, 1, 1, 1])``,
a shortened ``inverted_residual_setting``), width multipliers, a small DenseNet growth rate. Classifier heads of
VGG and AlexNet are the same Linear/ReLU/Dropout stack with 32 hidden units (their 4096-wide heads would dominate
every cost). GoogLeNet, Inception v3, SqueezeNet and MNASNet(0.25) are the torchvision constructors as they are
(they have no depth setting), with ``aux_logits=False`` and ``transform_input=False``.

Formats: ``legacy`` (``torch.onnx.export(dynamo=False)``, opset 17, no constant folding, so BatchNorm stays a node
and lrpaudit folds it exactly in float64), ``dynamo`` (``dynamo=True``, opset 18, the exporter's default optimizer:
it fuses BatchNorm into the convolutions in float32) and ``traced`` (``torch.jit.trace``).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.helpers.reference_models import export_onnx, randomize_batchnorm

FORMATS = ("legacy", "dynamo", "traced")


def _tv(module: str):
    return importlib.import_module(f"torchvision.models.{module}")


def _head(in_features: int, hidden: int = 32, classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, classes),
    )


def resnet():
    m = _tv("resnet")
    return m.ResNet(m.BasicBlock, [1, 1, 1, 1], num_classes=10)


def resnext():
    m = _tv("resnet")
    return m.ResNet(m.Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4, num_classes=10)


def wide_resnet():
    m = _tv("resnet")
    return m.ResNet(m.Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10)


def _vgg(batch_norm: bool):
    m = _tv("vgg")
    model = m.VGG(m.make_layers([8, "M", 16, "M"], batch_norm), num_classes=10)
    model.classifier = _head(16 * 7 * 7)  # 28x28 inputs reach the 7x7 adaptive pool unchanged
    return model


def vgg():
    return _vgg(False)


def vgg_bn():
    return _vgg(True)


def alexnet():
    model = _tv("alexnet").AlexNet(num_classes=10)
    model.classifier = nn.Sequential(nn.Dropout(), *_head(256 * 6 * 6))
    return model


def squeezenet():
    return _tv("squeezenet").SqueezeNet("1_1", num_classes=10)


def densenet():
    return _tv("densenet").DenseNet(
        growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10
    )


def mobilenet_v2():
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]]  # five blocks, two with a residual add
    return _tv("mobilenetv2").MobileNetV2(num_classes=10, width_mult=0.5, inverted_residual_setting=setting)


def mobilenet_v3():
    m = _tv("mobilenetv3")
    setting, last = m._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.5)
    return m.MobileNetV3(setting[:5], last, num_classes=10)  # SE, hardswish and a residual add among them


def efficientnet():
    m = _tv("efficientnet")
    setting, last = m._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.5)
    return m.EfficientNet(setting[:4], 0.2, num_classes=10, last_channel=last)


def shufflenet():
    return _tv("shufflenetv2").ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 128], num_classes=10)


def mnasnet():
    return _tv("mnasnet").MNASNet(0.25, num_classes=10)


def googlenet():
    return _tv("googlenet").GoogLeNet(
        num_classes=10, aux_logits=False, transform_input=False, init_weights=True
    )


def inception_v3():
    return _tv("inception").Inception3(
        num_classes=10, aux_logits=False, transform_input=False, init_weights=True
    )


def regnet():
    m = _tv("regnet")
    params = m.BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return m.RegNet(params, num_classes=10, stem_width=8)


FAMILIES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "resnet": (resnet, 32),
    "resnext": (resnext, 32),
    "wide_resnet": (wide_resnet, 32),
    "vgg": (vgg, 28),
    "vgg_bn": (vgg_bn, 28),
    "alexnet": (alexnet, 224),
    "squeezenet": (squeezenet, 32),
    "densenet": (densenet, 32),
    "mobilenet_v2": (mobilenet_v2, 32),
    "mobilenet_v3": (mobilenet_v3, 32),
    "efficientnet": (efficientnet, 32),
    "shufflenet": (shufflenet, 32),
    "mnasnet": (mnasnet, 32),
    "googlenet": (googlenet, 32),
    "inception_v3": (inception_v3, 75),
    "regnet": (regnet, 32),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The family's reduced model in eval mode: seeded weights, randomized BatchNorm statistics, and each
    BatchNorm's ``eps`` set to its float32 value (what an ONNX file stores), so that every format folds it with
    the same numbers."""
    factory, _ = FAMILIES[name]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = factory()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = float(np.float32(module.eps))
    return randomize_batchnorm(model, seed).eval()


def input_shape(name: str, batch: int = 1) -> tuple[int, ...]:
    return (batch, 3, FAMILIES[name][1], FAMILIES[name][1])


def export(model: nn.Module, name: str, fmt: str, path: Path) -> Path:
    """Write ``model`` (family ``name``) as ``fmt`` to ``path``."""
    x = torch.randn(input_shape(name), generator=torch.Generator().manual_seed(0))
    if fmt == "legacy":
        return export_onnx(model, x, path, dynamo=False, opset=17, fold=False)
    if fmt == "dynamo":
        return export_onnx(model, x, path, dynamo=True, opset=18, fold=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, x, check_trace=False).save(str(path))
    return path
