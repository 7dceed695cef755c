"""The ``conservative`` preset conserves end to end on deep CNNs, and the cancellation figure shows why the
previous (epsilon) design did not.

Oracles, none of them the engine's own numbers:
* exact conservation: every rule of the preset splits a unit's relevance into shares >= 0 that sum to 1 (DESIGN
  section 5: wsquare with the bias distributed, flat, winner-take-all, pass, route, gate), so the input map sums to
  the explained score to rounding, ``|r_output - r_input| <= 1e-12 |r_output|`` whatever the depth;
* sign preservation: with such shares no relevance changes sign, so ``sum |R| = |sum R|`` at every node: the
  cancellation figure is exactly 1 (to rounding) everywhere;
* the previous design (epsilon 1e-9, bias distribute, norm on adds) on the same files: every layer passes its
  1e-4 tolerance while the samples fail end to end, cancellation grows beyond 1e3, and the sample hint names it;
* the figures themselves against their definitions (``scale / |r_received|``; the per-sample maximum over nodes).

The deep nets are real files (legacy ONNX and traced TorchScript) of random depthwise-separable residual nets with
randomized BatchNorm statistics: expand 1x1 + hardswish, depthwise 3x3 + ReLU6, squeeze-excitation gates,
projection, residual adds without a following ReLU (where branches cancel), concatenations and average pools.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from lrpaudit import AuditRequest, run_audit
from lrpaudit.ir import Node
from lrpaudit.reports.json_report import build_report
from lrpaudit.reports.schema_check import validate_report
from lrpaudit.results import RawSample, finalize
from lrpaudit.rules.dispatch import handler_for
from lrpaudit.rules.spec import Rule
from lrpaudit.verdicts import ROW_FIELDS, Tolerance, cancellation
from tests.frontends.test_torchscript import save_torchscript
from tests.helpers.cli import run_cli
from tests.helpers.reference_models import export_onnx, randomize_batchnorm

SHAPE = (2, 3, 16, 16)
EPSILON_DESIGN = """\
version: 1
bias: distribute
rules:
  - match: {op: [linear, conv, conv_transpose, affine]}
    rule: epsilon
    epsilon: 1.0e-9
  - match: {op: [avgpool, global_avgpool, mean]}
    rule: flat
    stabilizer: 1.0e-9
  - match: {op: add}
    rule: norm
    stabilizer: 1.0e-9
"""


class SeparableBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6()
        )
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(2 * c, c, 1),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 1),
            nn.Hardsigmoid(),
        )
        self.project = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        h = self.depthwise(self.expand(x))
        return x + self.project(h * self.squeeze(h))


class DeepSeparable(nn.Module):
    """A stem, ``depth`` separable residual blocks (a concat + 1x1 mix every fourth), average pool, a head."""

    def __init__(self, depth: int, c: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU6())
        self.blocks = nn.ModuleList(SeparableBlock(c) for _ in range(depth))
        self.mixers = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for _ in range(depth // 4))
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Sequential(nn.Linear(c * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        for k, block in enumerate(self.blocks):
            y = block(x)
            x = self.mixers[k // 4](torch.cat([x, y], 1)) if k % 4 == 3 else y
        return self.head(torch.flatten(self.pool(x), 1))


NETS = {"deep16": (16, 0), "deep32": (32, 1)}


@pytest.fixture(scope="module")
def deep_file(export_cache):
    """``deep_file(name, fmt)``: the net's legacy ONNX (``onnx``) or traced (``torchscript``) file, made once."""

    def get(name: str, fmt: str):
        depth, seed = NETS[name]

        def make(path):
            torch.manual_seed(seed)
            model = randomize_batchnorm(DeepSeparable(depth), seed).eval()
            x = torch.randn(1, *SHAPE[1:])
            if fmt == "onnx":
                export_onnx(model, x, path, dynamo=False, opset=17, fold=False)
            else:
                save_torchscript(model, x, path, "traced")

        return export_cache(f"{name}.{'onnx' if fmt == 'onnx' else 'pt'}", make)

    return get


def inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


@pytest.mark.parametrize("name, fmt", [("deep16", "onnx"), ("deep32", "torchscript")])
def test_conservative_conserves_deep_nets_end_to_end_with_no_cancellation(deep_file, name, fmt):
    result = run_audit(
        AuditRequest(deep_file(name, fmt), preset="conservative", inputs=inputs(NETS[name][1]))
    )
    assert result.verdict == "pass"
    assert len([layer for layer in result.layers if layer.op == "conv"]) >= 4 * NETS[name][0]
    for sample in result.samples:
        assert abs(sample.r_output - sample.r_input) <= 1e-12 * abs(sample.r_output)
        assert sample.max_cancellation == pytest.approx(1.0, abs=1e-12)
    for layer in result.layers:
        for row in layer.sample_rows:
            if row["scale"] > 0:
                assert row["cancellation"] == pytest.approx(1.0, abs=1e-12), row["id"]
                assert abs(row["leak"]) <= 1e-12 * row["scale"], row["id"]


@pytest.fixture(scope="module")
def epsilon_design(tmp_path_factory):
    path = tmp_path_factory.mktemp("epsilon_design") / "epsilon-design.yaml"
    path.write_text(EPSILON_DESIGN)
    return path


def test_the_epsilon_design_fails_end_to_end_while_layers_pass_and_the_hint_says_why(
    deep_file, epsilon_design
):
    """Signed contributions cancel: sum |R| grows through the depthwise stack, and stabilizer shares far below
    the layer tolerance add up end to end. The figures show it, the hint names it."""
    result = run_audit(
        AuditRequest(deep_file("deep32", "torchscript"), config=epsilon_design, inputs=inputs(1))
    )
    assert all(layer.aggregate.verdict == "pass" for layer in result.layers)
    assert all(sample.verdict == "fail" for sample in result.samples)
    for sample in result.samples:
        assert sample.max_cancellation > 1e3
        assert "relevance cancels inside the network" in sample.hint
        assert sample.max_cancellation_layer in sample.hint and "--preset conservative" in sample.hint
        peak = max(
            (row["cancellation"], row["id"])
            for row in result.sample_layer_rows(result.samples.index(sample))
            if row["cancellation"] is not None
        )
        assert peak == (sample.max_cancellation, sample.max_cancellation_layer)
    cli = run_cli("check", deep_file("deep16", "onnx"), "-c", epsilon_design, "--random", "2", "-v")
    assert cli.exit_code == 1
    header = next(line for line in cli.stdout.splitlines() if line.startswith("layer "))
    assert "cancel" in header.split() and "max cancel" in cli.stdout
    assert "hint: sample " in cli.stdout and "while every layer passes" in cli.stdout


def test_cancellation_is_scale_over_the_received_sum():
    assert cancellation(-2.0, 6.0) == 3.0
    assert cancellation(5.0, 5.0) == 1.0
    assert cancellation(0.0, 4.0) is None  # an exact cancellation (or nothing arrived): no finite ratio
    assert cancellation(math.nan, 1.0) is None and cancellation(1e-300, 1e300) is None


def test_per_sample_maximum_and_json_nulls(tmp_path):
    """``finalize`` on hand-made figures: the maximum over nodes per sample and where; a node whose received sum
    is exactly 0 has no cancellation (JSON null without a non_finite marker), and a sample with none has null."""

    def values(received, scale):
        figures = {key: np.zeros(2) for key in ROW_FIELDS}
        figures["r_received"], figures["scale"] = np.array(received), np.array(scale)
        figures["r_passed"] = figures["r_received"]
        return figures

    layer_data = [
        (
            {"id": "a", "node_name": None, "op": "conv", "rule": "r", "rule_source": "s", "bias_mode": "-"},
            values([2.0, 0.0], [4.0, 0.0]),
        ),
        (
            {"id": "b", "node_name": "/b", "op": "add", "rule": "r", "rule_source": "s", "bias_mode": "-"},
            values([-1.0, 0.0], [1.5, 3.0]),
        ),
    ]
    samples = [
        RawSample(k, f"s{k}", 0, 1.0, 1.0, {"x": 1.0}, 1.0, {key: 0.0 for key in ("absorbed_bias",)})
        for k in range(2)
    ]
    layers, finals = finalize(layer_data, samples, Tolerance(), "float64")
    assert (finals[0].max_cancellation, finals[0].max_cancellation_layer) == (2.0, "a")
    assert (finals[1].max_cancellation, finals[1].max_cancellation_layer) == (None, None)
    assert (
        layers[1].sample_rows[1]["cancellation"] is None and layers[0].sample_rows[0]["cancellation"] == 2.0
    )


def test_json_report_carries_the_figures(deep_file, epsilon_design):
    result = run_audit(AuditRequest(deep_file("deep16", "onnx"), config=epsilon_design, inputs=inputs(0)))
    report = json.loads(json.dumps(build_report([result])))
    validate_report(report)
    run = report["runs"][0]
    assert all("cancellation" in row and "node_name" in row for row in run["layers"])
    for sample, audited in zip(run["samples"], result.samples):
        assert sample["max_cancellation"] == audited.max_cancellation
        assert sample["max_cancellation_layer"] == audited.max_cancellation_layer
        assert sample["hint"] == audited.hint
        assert all("cancellation" in row for row in sample["layers"])


def test_flat_on_an_add_gives_each_summand_an_equal_share():
    rule = Rule("flat")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = torch.randn(2, 3, 1, 1, dtype=torch.float64)  # broadcast over the positions
    r_out = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    node = Node("add", "add", ["x", "y"], ["z"], {"coeffs": [1.0, -1.0]})
    result = handler_for(rule)(node, [x, y], x - y, r_out, rule, {})
    assert torch.equal(result.r_in[0], r_out / 2)
    assert torch.allclose(result.r_in[1], (r_out / 2).sum(dim=(2, 3), keepdim=True), rtol=0, atol=1e-15)
    assert result.absorbed_stabilizer is None and result.degenerate is None
