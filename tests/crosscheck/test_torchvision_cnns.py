"""torchvision's CNN families from real files: every family audits from the legacy ONNX export, the dynamo ONNX
export and the traced TorchScript archive; the twins give the same node ids and the same relevance; float64
relevance equals Zennit's; the conservative preset conserves end to end on all of them.

Models: ``tests/helpers/torchvision_models.py`` (reduced configurations of the same torchvision classes, seeded
random weights, randomized BatchNorm statistics), exported once per session (``torchvision_export``). Inputs: one
seeded normal sample per family (batch 1 keeps the 224x224 AlexNet and 75x75 Inception cheap), a fixed target,
``init: one`` (as Zennit), float64.

Oracles:
* the runtime: each file's IR forward matches onnxruntime / the ScriptModule (the forward check of every audit);
* the twin: the legacy ONNX file and the traced archive hold the same float32 weights and lrpaudit folds
  BatchNorm in float64 from both, so their node ids are equal and their input maps agree to 1e-8 of the map's
  scale (not closer: ONNX stores activation constants as float32 attributes, HardSigmoid's alpha = 1/6 among
  them, which moves MobileNetV3's maps by ~4e-9); the dynamo file's BatchNorm is fused by the exporter in
  float32, so its map agrees to 1e-5;
* Zennit 0.5.1 (float64, the same weights) under EpsilonPlusFlat (lrpaudit's default preset) computes the same
  function once the torchvision modules are canonized the way Zennit needs: BatchNorm merged exactly (``eps = 0``
  on the emptied BatchNorm; DenseNet's by name, as its definition order is not its execution order), residual
  adds as ``zennit.layer.Sum``, functional average pools (``F.adaptive_avg_pool2d``, ``x.mean([2, 3])``,
  Inception's ``F.avg_pool2d``) as pooling modules, and squeeze-excitation modules under ``Pass`` (lrpaudit's gate
  rule: all relevance to the gated input). Maps agree to 1e-8 of the scale. DenseNet's unfoldable BatchNorms get
  Zennit's Pass, which lrpaudit's preset rule (epsilon, bias: ignore) reproduces except where their input is
  exactly 0 (README, "Bias modes"): there the asserted relation is with ``zero, bias: distribute`` on ``affine``
  (``y / y R``: Pass wherever relevance can arrive), and the preset's own rule is shown to lose exactly such
  (degenerate) relevance;
* conservation by construction (the conservative preset's shares are >= 0 and sum to 1): end-to-end leak <= 1e-12.

Cost: the legacy and traced files of every family but the two largest (``SLOW_FAMILIES``) run untagged, with the
dynamo files of two (``DYNAMO_FAST``); the other dynamo exports (1..6 s each), the two largest families and the
full-size constructors are marked ``slow`` (still part of the default run).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from lrpaudit import AuditRequest, run_audit
from lrpaudit.frontends import load_model
from tests.crosscheck.test_zennit_crosscheck import ExactMergeBatchNorm, deviation
from tests.helpers import torchvision_models as tv

zennit = pytest.importorskip("zennit")

from zennit import rules as zr  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonPlusFlat  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer  # noqa: E402

TARGETS = [3, 7]
SAMPLES = 1
ZENNIT_TOL = 1e-8
TWIN_TOL = 1e-8
DYNAMO_TOL = 1e-5
DYNAMO_FAST = ("vgg_bn", "densenet")
# The two largest (21M and 20M weights): slow-marked to keep the default run's cost in check.
SLOW_FAMILIES = ("inception_v3", "wide_resnet")
FAMILY_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FAMILIES else n for n in tv.FAMILIES]


def inputs(name: str) -> np.ndarray:
    shape = tv.input_shape(name, SAMPLES)
    return np.random.default_rng(11).standard_normal(shape).clip(-2.5, 2.5)


def node_config(tmp_path, name: str) -> str:
    """epsilon-plus-flat with init one; DenseNet's affine nodes get Zennit's Pass (see the module docstring)."""
    text = "version: 1\nextends: epsilon-plus-flat\ninit: one\n"
    if name == "densenet":
        text += "rules:\n  - match: {op: affine}\n    rule: zero\n    bias: distribute\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def audit(model, name: str, config=None, preset=None, fidelity: str = "sample"):
    """One audit of a loaded model (its graph is built once and kept across audits) on ``inputs(name)``."""
    request = AuditRequest(
        model,
        config=config,
        preset=preset,
        inputs=inputs(name),
        target=TARGETS[:SAMPLES],
        init="one",
        keep_relevance=True,
        fidelity=fidelity,
    )
    return run_audit(request)


def conserves(model, name: str) -> bool:
    """The conservative preset: every layer passes, every sample's end-to-end leak <= 1e-12 of its relevance."""
    result = run_audit(AuditRequest(model, preset="conservative", inputs=inputs(name), fidelity="off"))
    layers = all(layer.aggregate.verdict == "pass" for layer in result.layers)
    return layers and all(
        s.verdict == "pass" and abs(s.leak) <= 1e-12 * abs(s.r_output) for s in result.samples
    )


def input_map(result) -> np.ndarray:
    (key,) = [k for k in result.relevance if k not in ("targets", "output_relevance")]
    return result.relevance[key]


def comparable_ids(result) -> list[tuple[str, str]]:
    """``(id, op)`` per row; an exporter's decomposed SiLU (``x * sigmoid(x)``: a ``mul`` gate and a helper
    ``.sigmoid``) stands for the ``silu`` node TorchScript records (the SiLU fusion pass makes them one node)."""
    rows = [(row["id"], row["op"]) for row in result.layer_rows()]
    helpers = {node_id for node_id, op in rows if op == "sigmoid" and node_id.endswith(".sigmoid")}
    silu = {node_id.rsplit(".", 1)[0] for node_id in helpers}
    return [(i, "silu" if i in silu and op == "mul" else op) for i, op in rows if i not in helpers]


# ---------------------------------------------------------------- Zennit: canonizing torchvision for Zennit


class ExactNamedMergeBatchNorm(NamedMergeBatchNorm):
    """zennit 0.5.1's NamedMergeBatchNorm plus ``eps = 0`` on the emptied BatchNorm (see ExactMergeBatchNorm)."""

    def register(self, linears, batch_norm):
        self.saved_eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.saved_eps


def _stacked(self, *parts):
    return self.zennit_sum(torch.stack(list(parts), dim=-1))


def _residual_forwards() -> dict[type, tuple]:
    """Block type -> (is the residual on, forward with the add as a Sum module)."""
    from torchvision.models import efficientnet, mnasnet, mobilenetv2, mobilenetv3, regnet

    def regnet_forward(self, x):
        skip = x if self.proj is None else self.proj(x)
        return self.activation(_stacked(self, skip, self.f(x)))

    return {
        mobilenetv2.InvertedResidual: (
            lambda m: m.use_res_connect,
            lambda self, x: _stacked(self, x, self.conv(x)),
        ),
        mobilenetv3.InvertedResidual: (
            lambda m: m.use_res_connect,
            lambda self, x: _stacked(self, self.block(x), x),
        ),
        efficientnet.MBConv: (
            lambda m: m.use_res_connect,
            lambda self, x: _stacked(self, self.stochastic_depth(self.block(x)), x),
        ),
        mnasnet._InvertedResidual: (
            lambda m: m.apply_residual,
            lambda self, x: _stacked(self, self.layers(x), x),
        ),
        regnet.ResBottleneckBlock: (lambda m: True, regnet_forward),
    }


class _PoolsAsModules:
    """Stands in for ``torch.nn.functional`` inside an Inception block: its one functional average pool
    (kernel 3, stride 1, padding 1) becomes the block's pooling module, which Zennit gives its Norm rule."""

    def __init__(self, pool: nn.Module):
        self.pool = pool

    def avg_pool2d(self, x, kernel_size, stride, padding):
        assert (kernel_size, stride, padding) == (3, 1, 1)
        return self.pool(x)

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)


def _inception_forward(self, x):
    module = sys.modules[type(self).__module__]
    saved, module.F = module.F, _PoolsAsModules(self.zennit_pool)
    try:
        return torch.cat(type(self)._forward(self, x), 1)
    finally:
        module.F = saved


def _global_pool_forwards() -> dict[type, tuple[str, object]]:
    """Model type -> (method to replace, its body with the functional global average pool as a module)."""
    from torchvision.models import densenet, mnasnet, mobilenetv2, shufflenetv2

    def densenet_forward(self, x):
        out = torch.relu(self.features(x))
        return self.classifier(torch.flatten(self.zennit_pool(out), 1))

    def shufflenet_forward(self, x):
        x = self.conv5(self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x))))))
        return self.fc(torch.flatten(self.zennit_pool(x), 1))

    return {
        densenet.DenseNet: ("forward", densenet_forward),
        mobilenetv2.MobileNetV2: (
            "_forward_impl",
            lambda self, x: self.classifier(torch.flatten(self.zennit_pool(self.features(x)), 1)),
        ),
        mnasnet.MNASNet: (
            "forward",
            lambda self, x: self.classifier(torch.flatten(self.zennit_pool(self.layers(x)), 1)),
        ),
        shufflenetv2.ShuffleNetV2: ("_forward_impl", shufflenet_forward),
    }


def module_canonizer() -> AttributeCanonizer:
    from torchvision.models import inception

    residuals, pools = _residual_forwards(), _global_pool_forwards()
    averaging = (inception.InceptionA, inception.InceptionC, inception.InceptionE)

    def attributes(name, module):
        kind = type(module)
        if kind in residuals and residuals[kind][0](module):
            return {"forward": types.MethodType(residuals[kind][1], module), "zennit_sum": Sum()}
        if kind in pools:
            method, body = pools[kind]
            return {method: types.MethodType(body, module), "zennit_pool": nn.AdaptiveAvgPool2d(1)}
        if kind in averaging:
            return {
                "forward": types.MethodType(_inception_forward, module),
                "zennit_pool": nn.AvgPool2d(3, 1, 1),
            }
        return None

    return AttributeCanonizer(attributes)


def batchnorm_merges(name: str, model: nn.Module) -> list:
    """Exact merges; DenseNet's by name: conv0 -> norm0 and each layer's conv1 -> norm2 (its norm1, transition
    norms and norm5 follow a concatenation: they stay BatchNorms, which Zennit passes through)."""
    if name != "densenet":
        return [ExactMergeBatchNorm()]
    pairs = [(["features.conv0"], "features.norm0")]
    pairs += [
        ([f"{n}.conv1"], f"{n}.norm2")
        for n, m in model.named_modules()
        if n.endswith(tuple("0123456789")) and hasattr(m, "conv1")
    ]
    return [ExactNamedMergeBatchNorm(pairs)]


def zennit_map(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Zennit's EpsilonPlusFlat input map (float64) and the canonized model's output, on ``inputs(name)``."""
    from torchvision.ops.misc import SqueezeExcitation

    model = tv.build(name).double()
    canonizers = batchnorm_merges(name, model) + [module_canonizer()]
    if name in ("resnet", "resnext", "wide_resnet"):
        canonizers += [ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
    composite = EpsilonPlusFlat(canonizers=canonizers, layer_map=[(SqueezeExcitation, zr.Pass())])
    x = torch.from_numpy(inputs(name))
    with torch.no_grad():
        reference = model(x)
    onehot = torch.eye(reference.shape[1], dtype=torch.float64)[TARGETS[:SAMPLES]]
    with Gradient(model, composite) as attributor:
        output, relevance = attributor(x.clone(), onehot)
    torch.testing.assert_close(output, reference, rtol=1e-10, atol=1e-12)  # the canonized model is the model
    return relevance.detach().numpy(), reference.numpy()


# ---------------------------------------------------------------- the family matrix


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_family(torchvision_export, tmp_path, name):
    """Legacy ONNX and traced TorchScript (and dynamo for DYNAMO_FAST): load, forward check, the same ids and
    relevance, Zennit's map, and the conservative preset end to end."""
    config = node_config(tmp_path, name)
    formats = ("legacy", "traced", "dynamo") if name in DYNAMO_FAST else ("legacy", "traced")
    models = {fmt: load_model(torchvision_export(name, fmt)) for fmt in formats}
    results = {fmt: audit(model, name, config=config) for fmt, model in models.items()}
    for fmt, result in results.items():
        assert result.fidelity is not None and result.fidelity.passed, fmt
    legacy = input_map(results["legacy"])
    for fmt in formats[1:]:
        assert comparable_ids(results[fmt]) == comparable_ids(results["legacy"]), fmt
        tolerance = TWIN_TOL if fmt == "traced" else DYNAMO_TOL
        assert deviation(torch.from_numpy(input_map(results[fmt])), torch.from_numpy(legacy)) <= tolerance, (
            fmt
        )
    r_zennit, _ = zennit_map(name)
    assert deviation(torch.from_numpy(legacy), torch.from_numpy(r_zennit)) <= ZENNIT_TOL
    for fmt, model in models.items():
        assert conserves(model, name), fmt


def test_densenet_preset_rule_loses_exactly_the_relevance_at_zero_inputs(torchvision_export):
    """Under epsilon-plus-flat (epsilon, bias: ignore on affine) DenseNet's unfoldable BatchNorms pass nothing
    where their input is exactly 0: that relevance is reported as degenerate, and it is what the Pass-like rule
    (zero, bias: distribute) hands on instead."""
    model = load_model(torchvision_export("densenet", "legacy"))
    preset = audit(model, "densenet", preset="epsilon-plus-flat", fidelity="off")
    affine = [layer for layer in preset.layers if layer.op == "affine"]
    assert affine and any(layer.values["degenerate"].max() > 0 for layer in affine)
    assert all(layer.rule.startswith("epsilon") and layer.bias_mode == "ignore" for layer in affine)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in tv.FAMILIES if n not in DYNAMO_FAST])
def test_dynamo_twin(torchvision_export, tmp_path, name):
    """The dynamo export (BatchNorm fused into the convolutions in float32 by the exporter's optimizer) audits,
    names its nodes as the legacy twin does, gives its map to 1e-5, and conserves under the conservative preset."""
    config = node_config(tmp_path, name)
    dynamo = load_model(torchvision_export(name, "dynamo"))
    result = audit(dynamo, name, config=config)
    legacy = audit(load_model(torchvision_export(name, "legacy")), name, config=config, fidelity="off")
    assert result.fidelity.passed
    assert comparable_ids(result) == comparable_ids(legacy)
    assert deviation(torch.from_numpy(input_map(result)), torch.from_numpy(input_map(legacy))) <= DYNAMO_TOL
    assert conserves(dynamo, name)


FULL_SIZE = (
    "resnet18",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "mnasnet0_5",
    "efficientnet_b0",
    "regnet_y_400mf",
    "densenet121",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_constructor(export_cache, name):
    """torchvision's named constructors at full size (random weights, 32x32 inputs), legacy ONNX: the forward
    check passes and the conservative preset conserves end to end. (SqueezeNet 1.1, GoogLeNet and Inception v3
    in ``test_family`` are full size already; VGG and AlexNet need 224x224 inputs and 120M..140M weights.)"""
    import torchvision

    from tests.helpers.reference_models import export_onnx, randomize_batchnorm

    def make(path):
        torch.manual_seed(0)
        model = randomize_batchnorm(getattr(torchvision.models, name)(weights=None), 0).eval()
        export_onnx(model, torch.randn(1, 3, 32, 32), path, dynamo=False, opset=17, fold=False)

    model = load_model(export_cache(f"full-{name}.onnx", make))
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    result = run_audit(AuditRequest(model, preset="conservative", inputs=x))
    assert result.fidelity.passed and result.verdict == "pass"
    assert all(abs(s.leak) <= 1e-12 * abs(s.r_output) for s in result.samples)
