"""``lrpaudit.verify.verify_rules`` (the tool's own dense self-check, DESIGN section 6 "Self-verification"):
on a CNN with conv / affine / avgpool / grouped conv / linear it reports deviations at rounding level for every
rule and bias mode, and it is able to fail: a perturbed engine (a branch coefficient scaled, a view's bias
altered) is reported with a large deviation."""

from __future__ import annotations

import pytest
import torch

import lrpaudit.rules.linear as linear_rules
import lrpaudit.verify as verify_module
from lrpaudit.ir import Graph, Node
from lrpaudit.rules.spec import LINEAR_TYPE, POOLS, Rule
from lrpaudit.verify import verify_rules

DT = torch.float64


def _cnn() -> tuple[Graph, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=gen, dtype=DT)

    conv = {"dilation": (1, 1), "groups": 1}
    nodes = [
        Node(
            "conv1",
            "conv",
            ["x"],
            ["c1"],
            {**conv, "stride": (1, 1), "pads": (1, 1, 1, 1)},
            {"weight": r(4, 2, 3, 3, scale=0.4), "bias": r(4, scale=0.2)},
        ),
        Node("relu1", "relu", ["c1"], ["r1"]),
        Node("bn", "affine", ["r1"], ["b1"], {}, {"weight": 0.5 + r(4).abs(), "bias": r(4, scale=0.3)}),
        Node(
            "pool1",
            "avgpool",
            ["b1"],
            ["p1"],
            {
                "kernel": (3, 3),
                "stride": (2, 2),
                "pads": (1, 1, 1, 1),
                "ceil_mode": False,
                "count_include_pad": True,
            },
        ),
        Node(
            "conv2",
            "conv",
            ["p1"],
            ["c2"],
            {"stride": (1, 1), "pads": (1, 0, 1, 0), "dilation": (1, 1), "groups": 2},
            {"weight": r(6, 2, 3, 2, scale=0.4), "bias": r(6, scale=0.2)},
        ),
        Node("relu2", "relu", ["c2"], ["r2"]),
        Node(
            "pool2",
            "avgpool",
            ["r2"],
            ["p2"],
            {
                "kernel": (2, 2),
                "stride": (2, 2),
                "pads": (0, 0, 1, 1),
                "ceil_mode": False,
                "count_include_pad": False,
            },
        ),
        Node("flat", "reshape", ["p2"], ["f"], {"shape": (2, -1)}),
        Node("fc", "linear", ["f"], ["y"], {}, {"weight": r(5, 12, scale=0.3), "bias": r(5, scale=0.2)}),
    ]
    x = torch.randn(2, 2, 8, 6, generator=gen, dtype=DT)
    return Graph(["x"], ["y"], nodes), x


LINEAR_RULES = [
    ("zero", {}),
    ("epsilon", {"epsilon": 0.05}),
    ("gamma", {}),
    ("alphabeta", {}),
    ("alphabeta", {"alpha": 1.0, "beta": 0.0}),
    ("zplus", {}),
    ("wsquare", {}),
    ("flat", {}),
    ("zbox", {"low": -2.0, "high": 2.0}),
]


def _rules(linear: Rule, pool: Rule):
    return lambda node: linear if node.op in LINEAR_TYPE else pool if node.op in POOLS else None


@pytest.mark.parametrize("pool_rule", ["norm", "flat"])
@pytest.mark.parametrize("bias", ["absorb", "ignore", "distribute"])
@pytest.mark.parametrize("name,params", LINEAR_RULES, ids=[f"{n}{p or ''}" for n, p in LINEAR_RULES])
def test_verify_rules_passes_on_a_cnn(name, params, bias, pool_rule):
    graph, x = _cnn()
    rules = _rules(Rule(name, bias=bias, **params), Rule(pool_rule, stabilizer=0.01))
    for sample in (0, 1) if bias == "absorb" else (1,):
        checks = verify_rules(graph, {"x": x}, rules, sample=sample, init="logit", target=[1, 3])
        assert {c.node_id for c in checks} == {"conv1", "bn", "pool1", "conv2", "pool2", "fc"}
        for check in checks:
            assert check.units_checked > 0
            assert check.rel_dev <= 1e-10, (check.node_id, check.rule, check.rel_dev)


def test_verify_rules_checks_only_the_top_units_when_asked():
    graph, x = _cnn()
    checks = verify_rules(graph, {"x": x}, _rules(Rule("zplus"), Rule("norm")), max_units=5)
    by_id = {c.node_id: c for c in checks}
    assert by_id["conv1"].units_checked <= 5 < by_id["conv1"].units_total
    assert all(c.rel_dev <= 1e-10 for c in checks)


@pytest.mark.parametrize("name", ["zero", "zplus", "alphabeta", "gamma", "wsquare", "flat"])
def test_verify_rules_detects_a_scaled_branch(monkeypatch, name):
    """An engine whose first branch coefficient is off by 1% must be caught at every linear-type node."""
    original = linear_rules.build_branches

    def skewed(rule, view, a, z):
        branches = original(rule, view, a, z)
        branches[0].coeff *= 1.01
        return branches

    monkeypatch.setattr(linear_rules, "build_branches", skewed)
    graph, x = _cnn()
    checks = verify_rules(graph, {"x": x}, _rules(Rule(name), Rule("norm")))
    for check in checks:
        assert check.rel_dev > 1e-4, (check.node_id, check.rel_dev)


@pytest.mark.parametrize("name", ["wsquare", "alphabeta", "gamma"])
def test_verify_rules_detects_an_altered_bias(monkeypatch, name):
    """A view whose bias is 1.5x the node's (the engine then uses the wrong B_j) is caught where there is a bias."""
    original = verify_module.linear_view

    def altered(node, params, input_shape, out_rank):
        view = original(node, params, input_shape, out_rank)
        if view.bias is not None:
            view.bias = 1.5 * view.bias
        return view

    monkeypatch.setattr(verify_module, "linear_view", altered)
    graph, x = _cnn()
    checks = {c.node_id: c for c in verify_rules(graph, {"x": x}, _rules(Rule(name), Rule("norm")))}
    for node_id in ("conv1", "bn", "conv2", "fc"):  # >= 4 orders above the 1e-10 a correct engine stays under
        assert checks[node_id].rel_dev > 1e-6, (node_id, checks[node_id].rel_dev)
    for node_id in ("pool1", "pool2"):  # no bias: unaffected
        assert checks[node_id].rel_dev <= 1e-10


def test_verify_rules_detects_flat_on_pools_using_the_pool_weights(monkeypatch):
    """The pre-fix behaviour (flat on a pool with Z_ij = the pool's weights 1/count_j instead of 1, so the
    stabilizer sits on a different scale) is what the self-check reports."""
    original = linear_rules.build_branches

    def pool_weights(rule, view, a, z):
        branches = original(rule, view, a, z)
        if rule.name == "flat" and view.is_pool:
            for term in branches[0].terms:
                term.weight = None  # None = the pool's own weights
        return branches

    monkeypatch.setattr(linear_rules, "build_branches", pool_weights)
    graph, x = _cnn()
    checks = {
        c.node_id: c
        for c in verify_rules(graph, {"x": x}, _rules(Rule("zplus"), Rule("flat", stabilizer=0.1)))
    }
    assert checks["pool1"].rel_dev > 1e-3 and checks["pool2"].rel_dev > 1e-3
    assert checks["conv1"].rel_dev <= 1e-10


# ---------------------------------------------------------------- the transformer rules


@pytest.mark.parametrize("preset", ["attnlrp", "cp-lrp", "conservative"])
@pytest.mark.parametrize("kind", ["vit", "bert", "llama"])
def test_verify_rules_checks_the_transformer_rules(kind, preset):
    from lrpaudit.config import load_config
    from tests.helpers.transformer_ir import transformer

    model = transformer(kind, seed=2)
    checks = verify_rules(model.graph, {"tokens": model.example(1)}, load_config(preset=preset))
    checked = {c.rule.split("(")[0] for c in checks}
    assert {"norm_identity", "taylor", "uniform" if preset == "attnlrp" else "constant_factor"} <= checked
    for check in checks:
        assert check.rel_dev <= 1e-10, (check.node_id, check.rule, check.rel_dev)


@pytest.mark.parametrize("rule", ["norm_identity", "taylor", "uniform", "constant_factor"])
def test_verify_rules_detects_an_altered_transformer_rule(monkeypatch, rule):
    """An engine handler whose relevance is off by 1% on one input is caught at every node it runs on."""
    from lrpaudit.config import load_config
    from lrpaudit.rules import dispatch
    from tests.helpers.transformer_ir import transformer

    original = dispatch.HANDLERS[rule]

    def skewed(*args):
        result = original(*args)
        result.r_in[-1] = result.r_in[-1] * 1.01
        return result

    monkeypatch.setitem(dispatch.HANDLERS, rule, skewed)
    model = transformer("vit", seed=2)
    preset = "cp-lrp" if rule == "constant_factor" else "attnlrp"
    checks = verify_rules(model.graph, {"tokens": model.example(1)}, load_config(preset=preset))
    hits = [c for c in checks if c.rule.startswith(rule) and c.scale > 0]
    assert hits and all(c.rel_dev > 1e-4 for c in hits), [(c.node_id, c.rel_dev) for c in hits]
