"""Zennit as the oracle: lrpaudit's input relevance equals Zennit's on the same weights (DESIGN section 10).

Setup. Each torch model is exported to ONNX in float32 (the weights are float32 values, so nothing is rounded;
``fold=False`` keeps ``BatchNormalization`` nodes, which lrpaudit folds itself in float64) and explained by
lrpaudit in float64 with ``init="one"``. The same model in float64 (``model.double()``) is explained by Zennit:
``zennit.attribution.Gradient`` with ``attr_output = onehot(target)``. Targets are fixed per sample (not the
argmax). The input relevance maps must agree to ``TOL = 1e-8`` of the map's scale ``max |R_zennit|`` (measured:
<= 2e-12, most ~1e-16; run ``python -m tests.test_zennit_crosscheck`` for the table). Both forward outputs are
also checked against the torch model. BatchNorm ``eps`` is set to its float32 value (what the ONNX attribute
holds) on the torch side too, so both sides fold the same numbers (see ``float32_batchnorm_eps``).

Rule mapping (Zennit -> lrpaudit):

* a rule "on all linear-type layers" is a ``LayerMapComposite`` with ``layer_map_base()`` (``Pass`` on
  activations, ``Norm`` on ``Sum`` and average pools, ``Pass`` on BatchNorm) plus ``(zennit.types.Linear, rule)``;
  in lrpaudit a single ``Rule``, with the defaults elsewhere: ``norm`` (stabilizer 1e-6) on pools and on ``add``,
  ``pass`` on activations, the gradient (winner-take-all) on max pools, as Zennit (which leaves max pools alone);
* ``zero_params=['bias']`` is ``bias="ignore"``; Zennit's ``Flat`` always zeroes the bias, like lrpaudit's flat;
* ZBox on the first layer only is a ``SpecialFirstLayerMapComposite``; in lrpaudit the first linear-type node of
  ``graph.nodes`` (checked to be the same layer in ``test_first_layer_is_the_same_layer``);
* the composites EpsilonPlusFlat / EpsilonGammaBox / EpsilonAlpha2Beta1 map by type: ``Convolution`` -> conv
  nodes, ``torch.nn.Linear`` -> linear nodes. Their first-layer rule differs in scope: EpsilonPlusFlat puts Flat
  on the first module of *any* linear type, EpsilonGammaBox puts ZBox on the first *convolution* only (so on an
  MLP EpsilonGammaBox is Epsilon everywhere). ``lrp_composite`` reproduces both.

Residual nets: Zennit only treats an addition as an LRP node if it is a ``zennit.layer.Sum`` module over
``torch.stack([a, b], -1)`` (what its ResNet canonizers produce); the residual blocks below compute exactly that
when ``zennit_sum`` is set, and a plain ``a + b`` (what is exported to ONNX) otherwise. lrpaudit's default
``norm`` rule on ``add`` (proportional split, stabilizer 1e-6) must then equal Zennit's ``Norm`` on ``Sum``.

Genuine differences between the two libraries found here, each documented and asserted where it is tested:

1. BatchNorm merging (``test_zennit_051_batchnorm_merge_is_not_exact``). zennit 0.5.1's ``MergeBatchNorm``
   folds ``gamma / sqrt(var + eps)`` into the layer and then empties the BatchNorm to ``mean=0, var=1, gamma=1,
   beta=0`` but leaves its ``eps``: the "identity" BatchNorm still computes ``x / sqrt(1 + eps)`` (about
   ``1 - 5e-6`` for eps=1e-5), so the canonized model is not the original one and the maps differ by ~1e-6.
   Later Zennit versions set ``eps = 0`` there; the research note feared that torch >= 2.10 rejects this. On CPU,
   torch 2.14 rejects ``eps <= 0`` only in *training* mode ("batch_norm eps must be positive during training");
   in eval mode ``eps = 0`` works (third-party code reports CUDA builds rejecting it in eval mode too; these tests
   run on CPU). The tests therefore use ``ExactMergeBatchNorm`` (0.5.1's merge plus ``eps = 0`` on the emptied
   BatchNorm), and assert the 0.5.1 relation exactly: stock-canonized Zennit equals lrpaudit on the export of the
   stock-canonized model, whose leftover BatchNorm (the constant scale ``c = 1/sqrt(1 + eps)``) lrpaudit folds
   into the layer, with that layer's stabilizer scaled by the same ``c``.
2. The "first layer" (``test_first_layer_follows_definition_order_in_zennit``). Zennit's
   ``SpecialFirstLayerMapComposite`` takes the first matching module in ``named_modules()`` (definition) order;
   lrpaudit's first linear-type node is the first in execution (graph) order. They differ when a module is
   defined before the layers that run before it; the test asserts that Zennit's map then equals lrpaudit's with
   the first-layer rule on the *first-defined* layer, and differs from the execution-order assignment.
3. ZBox bounds shaped per input: lrpaudit takes arrays shaped like one sample ``(C, H, W)``; Zennit's ``expand``
   needs a leading batch axis ``(1, C, H, W)`` (a ``(C, H, W)`` tensor raises "Invalid shape"). Same numbers.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.propagate import propagate
from lrpaudit.rules import Rule
from tests.helpers.reference_models import build, export_onnx, randomize_batchnorm

zennit = pytest.importorskip("zennit")

from zennit import rules as zr  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.layer import Sum  # noqa: E402
from zennit.types import Linear as ZennitLinear  # noqa: E402

TOL = 1e-8
LINEAR_TYPE = ("linear", "conv", "conv_transpose", "affine")
ZBOX_LOW, ZBOX_HIGH = -3.0, 3.0
# Per-channel image bounds, as for normalized images: (0 - mean) / std and (1 - mean) / std.
IMAGE_MEAN, IMAGE_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# ---------------------------------------------------------------- models


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


def cnn(seed: int = 0) -> nn.Module:
    """conv/ReLU/maxpool/conv/ReLU/avgpool/flatten/linear/ReLU/linear, every layer with a bias."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    ).eval()


class ResBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a skip (identity, or 1x1 conv + bn), summed, then relu.

    The sum is ``Sum()(torch.stack([out, skip], -1))`` when ``zennit_sum`` is set (Zennit's canonical residual,
    which gets its ``Norm`` rule) and ``out + skip`` otherwise (exported to ONNX); the two are the same numbers.
    Modules are defined in execution order, as ``SequentialMergeBatchNorm`` requires.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.sum = Sum()
        self.relu2 = nn.ReLU()
        self.zennit_sum = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        skip = x if self.downsample is None else self.downsample(x)
        out = self.sum(torch.stack([out, skip], dim=-1)) if self.zennit_sum else out + skip
        return self.relu2(out)


class ResNet(nn.Module):
    """A stem (conv with bias + bn + relu), an identity block, a downsampling block, global pool, linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = ResBlock(8, 8)
        self.block2 = ResBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.block2(self.block1(self.stem(x))))))


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(ResNet(), seed).eval()


def set_zennit_sum(model: nn.Module, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, ResBlock):
            module.zennit_sum = on


# name -> (factory, sample shape, targets); mlp_bn and cnn_bn are the shared reference nets (randomized BN stats).
MODELS = {
    "mlp": (mlp, (20,), [0, 3, 4]),
    "cnn": (cnn, (3, 16, 16), [2, 7, 0]),
    "mlp_bn": (lambda seed=0: build("mlp_bn", seed), (20,), [1, 4, 2]),
    "cnn_bn": (lambda seed=0: build("cnn_bn", seed), (3, 16, 16), [9, 0, 5]),
    "resnet": (resnet, (3, 16, 16), [5, 1, 3]),
}
CONV_MODELS = ("cnn", "cnn_bn", "resnet")


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit 0.5.1's ``SequentialMergeBatchNorm`` plus ``eps = 0`` on the emptied BatchNorm (as Zennit 1.0 does).

    0.5.1 leaves ``eps`` in place, so the emptied BatchNorm computes ``x / sqrt(1 + eps)``, not ``x``. ``eps = 0``
    is accepted by torch 2.14 in eval mode (it is rejected only in training mode). ``remove`` restores ``eps``.
    """

    def register(self, linears, batch_norm):
        self.saved_eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.saved_eps


def float32_batchnorm_eps(model: nn.Module) -> None:
    """Give each BatchNorm the eps its ONNX export carries: a float32 attribute (1e-5 -> 9.99999974737875e-06).

    Otherwise lrpaudit (reading the file) and Zennit (reading the torch module) fold with scales that differ by
    ~1e-13 relative, which ill-conditioned denominators (bias-free sums near zero under ``zero_params``) amplify to
    several 1e-9 of the map's scale: a difference in the inputs, not in the rules.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = float(np.float32(module.eps))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Case:
    """One model: the float64 torch model for Zennit, the lrpaudit graph of its ONNX export, inputs, targets."""

    def __init__(
        self,
        name: str,
        onnx_dir,
        model: nn.Module,
        shape: tuple[int, ...],
        targets: list[int],
        export_double=False,
    ):
        self.name = name
        float32_batchnorm_eps(model)
        gen = torch.Generator().manual_seed(7)
        x = torch.randn((len(targets), *shape), generator=gen, dtype=torch.float64).clamp(-2.5, 2.5)
        self.x = x
        self.targets = targets
        # float32 export: the weights are float32 values, nothing is rounded. A model whose weights were computed in
        # float64 (a canonized one) is exported in float64 instead.
        exported = (model.double(), x) if export_double else (model.float(), x.float())
        path = export_onnx(*exported, onnx_dir / f"{name}.onnx", dynamo=False, opset=17, fold=False)
        self.graph = load_onnx(str(path)).graph({"x": tuple(x.shape)})
        self.model = model.double()
        with torch.no_grad():
            self.reference_output = self.model(x)
        set_zennit_sum(self.model, True)
        self.canonizers = [ExactMergeBatchNorm()] if has_batchnorm(self.model) else []
        self.onehot = torch.eye(self.reference_output.shape[1], dtype=torch.float64)[targets]
        self.linear_nodes = [n for n in self.graph.nodes if n.op in LINEAR_TYPE]

    def zennit(self, composite, check_output: bool = True) -> torch.Tensor:
        with Gradient(self.model, composite) as attributor:
            output, relevance = attributor(self.x.clone(), self.onehot)
        if check_output:  # the canonized model computes the original function
            torch.testing.assert_close(output, self.reference_output, rtol=1e-12, atol=1e-12)
        return relevance.detach()

    def lrpaudit(self, rules) -> torch.Tensor:
        prop = propagate(self.graph, feeds={"x": self.x}, rules=rules, init="one", target=self.targets)
        torch.testing.assert_close(prop.output, self.reference_output, rtol=1e-10, atol=1e-10)
        return prop.input_relevance["x"]

    def image_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-input ZBox bounds shaped like one sample (lrpaudit's convention)."""
        shape = tuple(self.x.shape[1:])
        low = np.broadcast_to(((0 - IMAGE_MEAN) / IMAGE_STD)[:, None, None], shape).copy()
        high = np.broadcast_to(((1 - IMAGE_MEAN) / IMAGE_STD)[:, None, None], shape).copy()
        return low, high


def deviation(r_lrp: torch.Tensor, r_zennit: torch.Tensor) -> float:
    """max |R_lrpaudit - R_zennit| relative to the map's scale max |R_zennit|."""
    scale = r_zennit.abs().max().item()
    assert scale > 0, "Zennit's map is all zeros: nothing is compared"
    return (r_lrp - r_zennit).abs().max().item() / scale


_CASES: dict[str, Case] = {}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    onnx_dir = tmp_path_factory.mktemp("zennit_crosscheck")

    def get(name: str) -> Case:
        if name not in _CASES:
            factory, shape, targets = MODELS[name]
            _CASES[name] = Case(name, onnx_dir, factory(), shape, targets)
        return _CASES[name]

    yield get
    _CASES.clear()


# ---------------------------------------------------------------- single rules on every linear-type layer

# rule name -> (Zennit hook factory, lrpaudit Rule factory); zp is zennit's zero_params, bias lrpaudit's mode.
SINGLE_RULES = {
    "epsilon": (lambda zp: zr.Epsilon(epsilon=1e-6, zero_params=zp), lambda b: Rule("epsilon", bias=b)),
    "epsilon_0.25": (
        lambda zp: zr.Epsilon(epsilon=0.25, zero_params=zp),
        lambda b: Rule("epsilon", epsilon=0.25, bias=b),
    ),
    "zplus": (lambda zp: zr.ZPlus(zero_params=zp), lambda b: Rule("zplus", bias=b)),
    "alphabeta_2_1": (
        lambda zp: zr.AlphaBeta(alpha=2, beta=1, zero_params=zp),
        lambda b: Rule("alphabeta", alpha=2, beta=1, bias=b),
    ),
    "alphabeta_1_0": (
        lambda zp: zr.AlphaBeta(alpha=1, beta=0, zero_params=zp),
        lambda b: Rule("alphabeta", alpha=1, beta=0, bias=b),
    ),
    "gamma": (lambda zp: zr.Gamma(gamma=0.25, zero_params=zp), lambda b: Rule("gamma", gamma=0.25, bias=b)),
    "wsquare": (lambda zp: zr.WSquare(zero_params=zp), lambda b: Rule("wsquare", bias=b)),
    "flat": (lambda zp: zr.Flat(zero_params=zp), lambda b: Rule("flat", bias=b)),
}
BIAS_MODES = {"bias": (None, "absorb"), "no_bias": (["bias"], "ignore")}


def single_rule_deviation(case: Case, rule: str, bias: str) -> float:
    zennit_rule, lrp_rule = SINGLE_RULES[rule]
    zero_params, mode = BIAS_MODES[bias]
    composite = LayerMapComposite(
        layer_map=layer_map_base() + [(ZennitLinear, zennit_rule(zero_params))], canonizers=case.canonizers
    )
    return deviation(case.lrpaudit(lrp_rule(mode)), case.zennit(composite))


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("rule", SINGLE_RULES)
@pytest.mark.parametrize("model", MODELS)
def test_single_rule_matches_zennit(cases, model, rule, bias):
    assert single_rule_deviation(cases(model), rule, bias) <= TOL


# ---------------------------------------------------------------- ZBox on the first layer, Epsilon elsewhere


def zbox_first_deviation(case: Case, bias: str, per_input: bool) -> float:
    """ZBox(low, high) on the first linear-type layer, Epsilon(1e-6) on the others.

    ``per_input``: bounds shaped like one sample (image models: per-channel normalized [0, 1] bounds) instead of
    the scalars -3, 3. Zennit needs the batch axis on such bounds (``(1, C, H, W)``), lrpaudit takes ``(C, H, W)``.
    """
    zero_params, mode = BIAS_MODES[bias]
    if per_input:
        low, high = case.image_bounds()
        z_low, z_high = torch.from_numpy(low)[None], torch.from_numpy(high)[None]
    else:
        low = z_low = ZBOX_LOW
        high = z_high = ZBOX_HIGH
    composite = SpecialFirstLayerMapComposite(
        layer_map=layer_map_base() + [(ZennitLinear, zr.Epsilon(zero_params=zero_params))],
        first_map=[(ZennitLinear, zr.ZBox(low=z_low, high=z_high, zero_params=zero_params))],
        canonizers=case.canonizers,
    )
    first = case.linear_nodes[0].id
    box = Rule("zbox", low=low, high=high, bias=mode)
    eps = Rule("epsilon", bias=mode)
    rules = {n.id: (box if n.id == first else eps) for n in case.linear_nodes}
    return deviation(case.lrpaudit(rules), case.zennit(composite))


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("model", MODELS)
def test_zbox_first_layer_matches_zennit(cases, model, bias):
    assert zbox_first_deviation(cases(model), bias, per_input=False) <= TOL


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("model", CONV_MODELS)
def test_zbox_per_input_bounds_match_zennit(cases, model, bias):
    assert zbox_first_deviation(cases(model), bias, per_input=True) <= TOL


# ---------------------------------------------------------------- named composites


def lrp_composite(case: Case, name: str, mode: str):
    """lrpaudit's rule choice reproducing a Zennit composite (by node op; first layer as the composite scopes it)."""
    eps = Rule("epsilon", bias=mode)
    conv_rule = {
        "epsilon_plus_flat": Rule("zplus", bias=mode),
        "epsilon_gamma_box": Rule("gamma", gamma=0.25, bias=mode),
        "epsilon_alpha2_beta1": Rule("alphabeta", alpha=2, beta=1, bias=mode),
    }[name]
    rules = {n.id: (conv_rule if n.op == "conv" else eps) for n in case.linear_nodes}
    if name == "epsilon_plus_flat":  # Flat on the first layer of any linear type
        rules[case.linear_nodes[0].id] = Rule("flat", bias=mode)
    elif name == "epsilon_gamma_box":  # ZBox on the first convolution only
        convs = [n for n in case.linear_nodes if n.op == "conv"]
        if convs:
            low, high = case.image_bounds()
            rules[convs[0].id] = Rule("zbox", low=low, high=high, bias=mode)
    return rules


def zennit_composite(case: Case, name: str, zero_params):
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(zero_params=zero_params, canonizers=case.canonizers)
    if name == "epsilon_alpha2_beta1":
        return EpsilonAlpha2Beta1(zero_params=zero_params, canonizers=case.canonizers)
    if case.x.dim() == 4:
        low, high = (torch.from_numpy(b)[None] for b in case.image_bounds())
    else:  # never used: EpsilonGammaBox's ZBox only targets convolutions
        low, high = ZBOX_LOW, ZBOX_HIGH
    return EpsilonGammaBox(low=low, high=high, zero_params=zero_params, canonizers=case.canonizers)


COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")


def composite_deviation(case: Case, name: str, bias: str) -> float:
    zero_params, mode = BIAS_MODES[bias]
    return deviation(
        case.lrpaudit(lrp_composite(case, name, mode)), case.zennit(zennit_composite(case, name, zero_params))
    )


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("model", MODELS)
def test_composite_matches_zennit(cases, model, composite, bias):
    assert composite_deviation(cases(model), composite, bias) <= TOL


def test_composites_on_mlp_reduce_as_documented(cases):
    """On an MLP (no convolutions) EpsilonGammaBox and EpsilonAlpha2Beta1 are Epsilon everywhere in Zennit."""
    case = cases("mlp")
    everywhere = case.zennit(
        LayerMapComposite(layer_map=layer_map_base() + [(ZennitLinear, zr.Epsilon())], canonizers=[])
    )
    for name in ("epsilon_gamma_box", "epsilon_alpha2_beta1"):
        assert deviation(case.zennit(zennit_composite(case, name, None)), everywhere) == 0.0


# ---------------------------------------------------------------- first layer


class RecordingFirstLayer(SpecialFirstLayerMapComposite):
    """Records which module Zennit gives the first-layer rule to."""

    first_name: str | None = None

    def mapping(self, ctx, name, module):
        visited = ctx.get("first_layer_visited", False)
        hook = super().mapping(ctx, name, module)
        if not visited and ctx.get("first_layer_visited", False):
            self.first_name = name
        return hook


@pytest.mark.parametrize("model", MODELS)
def test_first_layer_is_the_same_layer(cases, model):
    """Zennit's first layer (first in ``named_modules()``) is lrpaudit's first linear-type node in these models
    (whose id is its module path: the legacy export's node names record it)."""
    case = cases(model)
    composite = RecordingFirstLayer(
        layer_map=layer_map_base() + [(ZennitLinear, zr.Epsilon())],
        first_map=[(ZennitLinear, zr.Flat())],
        canonizers=case.canonizers,
    )
    case.zennit(composite)
    assert composite.first_name is not None
    assert composite.first_name == case.linear_nodes[0].id


class HeadDefinedFirst(nn.Module):
    """The linear head is *defined* before the conv that runs first."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8 * 4 * 4, 5)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(4)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.relu(self.conv(x)))))


def test_first_layer_follows_definition_order_in_zennit(tmp_path):
    """Definitional difference: Zennit's "first layer" is the first *defined* matching module.

    ``SpecialFirstLayerMapComposite`` walks ``named_modules()`` (definition order), so in ``HeadDefinedFirst``
    EpsilonPlusFlat gives Flat to the head and ZPlus to the conv. lrpaudit's first linear-type node is the first in
    execution order (the conv). Asserted relation: Zennit equals lrpaudit with flat on the head and zplus on the
    conv, and differs from lrpaudit with flat on the conv (the execution-order assignment) by far more than TOL.
    """
    torch.manual_seed(3)
    case = Case("head_first", tmp_path, HeadDefinedFirst().eval(), (3, 16, 16), [1, 4, 0])
    composite = RecordingFirstLayer(
        layer_map=layer_map_base() + [(nn.Conv2d, zr.ZPlus()), (nn.Linear, zr.Epsilon())],
        first_map=[(ZennitLinear, zr.Flat())],
    )
    r_zennit = case.zennit(composite)
    assert composite.first_name == "head"
    conv, head = case.linear_nodes
    assert (conv.op, head.op) == ("conv", "linear")
    by_definition = {conv.id: Rule("zplus"), head.id: Rule("flat")}
    by_execution = {conv.id: Rule("flat"), head.id: Rule("epsilon")}
    assert deviation(case.lrpaudit(by_definition), r_zennit) <= TOL
    assert deviation(case.lrpaudit(by_execution), r_zennit) > 1e-3


# ---------------------------------------------------------------- zennit 0.5.1's BatchNorm merge


@pytest.mark.parametrize("rule", ["epsilon", "gamma"])
def test_zennit_051_batchnorm_merge_is_not_exact(cases, tmp_path, rule):
    """Definitional difference: zennit 0.5.1's merged BatchNorm still divides by ``sqrt(1 + eps)``.

    ``MergeBatchNorm.merge_batch_norm`` sets the BatchNorm's statistics to the identity but keeps ``eps``, so the
    canonized model computes ``x / sqrt(1 + eps)`` at every BatchNorm, which gets Zennit's ``Pass`` rule.
    Asserted: (a) the emptied BatchNorm is exactly that scale, so the canonized forward is off by ~1e-6;
    (b) the stock-canonized Zennit map differs from the exactly canonized one (and from lrpaudit) by more than TOL;
    (c) it equals, to TOL, lrpaudit's map of the *stock-canonized* model exported to ONNX. There lrpaudit folds the
    leftover scale ``c = 1/sqrt(1 + eps)`` into the layer (``W, b -> cW, cb``); epsilon and gamma are invariant
    under that joint scaling except through the stabilizer, so those layers get the stabilizer scaled by ``c``
    too: ``x w c / (c z + c eps) = x w / (z + eps)``, exactly Zennit's rule on the unscaled layer followed by
    ``Pass`` through the scale. (Without that, the relation holds only to ~1e-9, where some ``z`` are small.)
    """
    case = cases("cnn_bn")
    zennit_rule, lrp_rule = SINGLE_RULES[rule]

    def composite(canonizer):
        return LayerMapComposite(
            layer_map=layer_map_base() + [(ZennitLinear, zennit_rule(None))], canonizers=[canonizer]
        )

    stock = SequentialMergeBatchNorm()
    canonized = copy.deepcopy(case.model)
    stock.apply(canonized)  # registers the merges (never removed: this copy stays canonized)
    bn = next(m for m in canonized.modules() if isinstance(m, nn.BatchNorm2d))
    probe = torch.randn(2, bn.num_features, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(bn(probe), probe / math.sqrt(1 + bn.eps), rtol=1e-15, atol=0)
        off = (canonized(case.x) - case.reference_output).abs().max() / case.reference_output.abs().max()
    assert 1e-8 < off.item() < 1e-4

    r_stock = case.zennit(composite(SequentialMergeBatchNorm()), check_output=False)
    r_exact = case.zennit(composite(ExactMergeBatchNorm()))
    assert deviation(r_stock, r_exact) > TOL
    assert deviation(case.lrpaudit(lrp_rule("absorb")), r_exact) <= TOL

    _, shape, targets = MODELS["cnn_bn"]
    stock_case = Case("cnn_bn_stock_canonized", tmp_path, canonized, shape, targets, export_double=True)
    c = 1 / math.sqrt(1 + bn.eps)
    scaled = {
        "epsilon": Rule("epsilon", epsilon=1e-6 * c),
        "gamma": Rule("gamma", gamma=0.25, stabilizer=1e-6 * c),
    }
    rules = {
        n.id: scaled[rule] if "BatchNormalization" in n.origin["ops"] else lrp_rule("absorb")
        for n in stock_case.linear_nodes
    }
    assert sum("BatchNormalization" in n.origin["ops"] for n in stock_case.linear_nodes) == 2
    assert deviation(stock_case.lrpaudit(rules), r_stock) <= TOL


def test_comparison_is_sensitive(cases):
    """Negative controls: a neighbouring configuration is far outside TOL, so the agreement above means something."""
    case = cases("cnn")
    composite = LayerMapComposite(layer_map=layer_map_base() + [(ZennitLinear, zr.Epsilon())], canonizers=[])
    r_zennit = case.zennit(composite)
    assert deviation(case.lrpaudit(Rule("epsilon", bias="ignore")), r_zennit) > 1e-3  # bias mode
    assert deviation(case.lrpaudit(Rule("epsilon", epsilon=1e-3)), r_zennit) > 1e-6  # epsilon value
    assert deviation(case.lrpaudit(Rule("zplus")), r_zennit) > 1e-3  # rule


# ---------------------------------------------------------------- the table


def deviation_table() -> list[tuple[str, str, str, float]]:
    """(configuration, model, bias, deviation) for every cross-checked configuration."""
    import tempfile
    from pathlib import Path

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, (factory, shape, targets) in MODELS.items():
            case = Case(model, Path(tmp), factory(), shape, targets)
            for bias in BIAS_MODES:
                for rule in SINGLE_RULES:
                    rows.append((rule, model, bias, single_rule_deviation(case, rule, bias)))
                rows.append(
                    ("zbox(-3,3) first + epsilon", model, bias, zbox_first_deviation(case, bias, False))
                )
                if model in CONV_MODELS:
                    rows.append(
                        (
                            "zbox(per-input) first + epsilon",
                            model,
                            bias,
                            zbox_first_deviation(case, bias, True),
                        )
                    )
                for name in COMPOSITES:
                    rows.append((name, model, bias, composite_deviation(case, name, bias)))
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    for config, model, bias, dev in sorted(deviation_table()):
        print(f"| {config} | {model} | {bias} | {dev:.1e} |")
