"""Rule x op x bias mode: the engine against dense matrix formulas written from DESIGN section 5.

For every linear-type case (linear, conv1d, conv2d with stride/padding/dilation/groups and asymmetric pads,
conv3d, conv_transpose2d with stride/padding/groups/output_padding/dilation, affine) and every pool case
(avgpool with padding, count_include_pad both ways, ceil_mode, asymmetric pads; global_avgpool; mean), every rule
(zero, epsilon, gamma, alphabeta(2,1), alphabeta(1,0), zplus, wsquare, flat, zbox with scalar and per-input
bounds, plus variants with large stabilizers so that a misplaced stabilizer shows) and every bias mode:

* the effective matrix ``W`` is the Jacobian of the torch op (pools: built window by window), ``b = op(0)``;
* the rule is evaluated with explicit ``Z_ij`` matrices (``tests/_lrp_dense.py``), sample by sample;
* two paths into the engine: ``apply_linear_rule`` with a random mixed-sign ``R`` (on a mixed-sign batch with
  exact zeros and on a non-negative batch, which takes the engine's "skip the a- terms" shortcut), and
  ``propagate`` on a one-node graph with ``init="logit"`` and a different target per sample;
* asserted: ``max |R_engine - R_dense| <= 1e-10 * scale`` per sample, and the accounting
  (``absorbed_bias``, ``absorbed_stabilizer``, ``degenerate``) equal to the dense shares to the same tolerance,
  ``residual ~ 0``. ``scale`` is ``sum |R|``, or, where a denominator nearly cancels (``ignore`` mode makes
  ``sum_i Z_ij`` of a unit close to zero now and then), the size of the summed terms
  ``sum_k sum_j |c_k R_j| (sum_i |Z_ij| + |B_j| + |E_j|) / |D_j|`` (rounding scales with it). The worst
  ``dev / sum |R|`` is recorded too; on these cases it stays far below 1e-10 except on such near-cancelling units.
"""

from __future__ import annotations

import pytest
import torch

from lrpaudit.forward import run_forward
from lrpaudit.propagate import propagate
from lrpaudit.rules.linear import apply_linear_rule
from lrpaudit.rules.linear_view import linear_view
from lrpaudit.rules.spec import Rule
from tests.helpers.dense import (
    CASES,
    DT,
    LINEAR_CASES,
    POOL_CASES,
    dense_rule,
    rule_params,
    sample_inputs,
)

TOL = 1e-10
BIAS_MODES = ("absorb", "ignore", "distribute")


def _zbox_per_input(case):
    gen = torch.Generator().manual_seed(77)
    low = -(0.5 + torch.rand(case.in_shape, generator=gen, dtype=DT))
    high = 0.5 + torch.rand(case.in_shape, generator=gen, dtype=DT)
    return Rule("zbox", low=low, high=high)


# (id, factory(case, bias) -> Rule)
LINEAR_RULES = [
    ("zero", lambda c, m: Rule("zero", bias=m)),
    ("zero_stab0.05", lambda c, m: Rule("zero", bias=m, stabilizer=0.05)),
    ("epsilon", lambda c, m: Rule("epsilon", bias=m)),
    ("epsilon0.1", lambda c, m: Rule("epsilon", bias=m, epsilon=0.1)),
    ("gamma", lambda c, m: Rule("gamma", bias=m)),
    ("gamma1_stab0.05", lambda c, m: Rule("gamma", bias=m, gamma=1.0, stabilizer=0.05)),
    ("alphabeta21", lambda c, m: Rule("alphabeta", bias=m)),
    ("alphabeta10", lambda c, m: Rule("alphabeta", bias=m, alpha=1.0, beta=0.0)),
    ("alphabeta32_stab0.05", lambda c, m: Rule("alphabeta", bias=m, alpha=3.0, beta=2.0, stabilizer=0.05)),
    ("zplus", lambda c, m: Rule("zplus", bias=m)),
    ("zplus_stab0.05", lambda c, m: Rule("zplus", bias=m, stabilizer=0.05)),
    ("wsquare", lambda c, m: Rule("wsquare", bias=m)),
    ("wsquare_stab0.1", lambda c, m: Rule("wsquare", bias=m, stabilizer=0.1)),
    ("flat", lambda c, m: Rule("flat", bias=m)),
    ("flat_stab0.1", lambda c, m: Rule("flat", bias=m, stabilizer=0.1)),
    ("zbox_scalar", lambda c, m: Rule("zbox", bias=m, low=-2.0, high=1.5)),
    ("zbox_default", lambda c, m: Rule("zbox", bias=m)),
    ("zbox_per_input", lambda c, m: Rule("zbox", bias=m, **_zbox_per_input(c).params)),
]

POOL_RULES = [
    ("norm", lambda c, m: Rule("norm")),
    ("norm_stab0.05", lambda c, m: Rule("norm", stabilizer=0.05)),
    ("flat", lambda c, m: Rule("flat")),
    ("flat_stab0.1", lambda c, m: Rule("flat", stabilizer=0.1)),
    ("zero", lambda c, m: Rule("zero")),
    ("epsilon0.1", lambda c, m: Rule("epsilon", epsilon=0.1)),
]

LINEAR_RULE_MAP = dict(LINEAR_RULES)
POOL_RULE_MAP = dict(POOL_RULES)


def _dense_batch(case, rule, a, z, R):
    W, b, conn = case.dense()
    return [
        dense_rule(rule.name, rule_params(rule), rule.bias, W, b, conn, a[s], z[s], R[s])
        for s in range(a.shape[0])
    ]


def _per_sample(t):
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _compare(case, rule, a, z, R, r_in, bias, stab, degenerate, label):
    """Engine numbers (batched) against the dense reference, sample by sample; returns the worst rel deviation."""
    worst = 0.0
    for s, ref in enumerate(_dense_batch(case, rule, a, z, R)):
        scale = max(float(R[s].abs().sum()), ref.magnitude)
        assert scale > 0
        dev = float((r_in[s].reshape(-1) - ref.r_in).abs().max()) / scale
        acc = [
            ("absorbed_bias", float(bias[s]), ref.absorbed_bias),
            ("absorbed_stabilizer", float(stab[s]), ref.absorbed_stabilizer),
            ("degenerate", float(degenerate[s]), ref.degenerate),
        ]
        assert dev <= TOL, f"{label} sample {s}: relevance deviates by {dev:.3e} of sum|R|"
        for what, got, want in acc:
            assert abs(got - want) <= TOL * scale, f"{label} sample {s}: {what} {got!r} != dense {want!r}"
        # The accounting identity on the engine's own numbers: leak = bias + stabilizer + degenerate.
        leak = float(R[s].sum()) - float(r_in[s].sum())
        residual = leak - float(bias[s]) - float(stab[s]) - float(degenerate[s])
        assert abs(residual) <= TOL * scale, f"{label} sample {s}: residual {residual:.3e}"
        # ... and on the dense numbers (the dense formula must account for its own leak too).
        dense_leak = float(R[s].sum()) - float(ref.r_in.sum())
        dense_res = dense_leak - ref.absorbed_bias - ref.absorbed_stabilizer - ref.degenerate
        assert abs(dense_res) <= TOL * scale, f"{label}: dense reference does not account ({dense_res:.3e})"
        worst = max(worst, dev)
    return worst


def _direct(case, rule, seed):
    """apply_linear_rule with a random mixed-sign R, on a mixed batch and on a non-negative batch."""
    node = case.node()
    params = {k: v.to(DT) for k, v in node.params.items()}
    worst = 0.0
    for label, a in zip(("mixed", "nonneg"), sample_inputs(case, seed)):
        z = case.forward(a)
        gen = torch.Generator().manual_seed(seed + 5)
        R = torch.randn(z.shape, generator=gen, dtype=DT)
        R[R.abs() < 0.2] = 0.0  # some output units carry no relevance
        view = linear_view(node, params, tuple(a.shape), z.dim())
        res = apply_linear_rule(rule, view, a, z, R)
        assert res.r_in.shape == a.shape
        worst = max(
            worst,
            _compare(
                case,
                rule,
                a,
                z,
                R,
                res.r_in,
                res.absorbed_bias,
                res.absorbed_stabilizer,
                res.degenerate,
                f"{case.name}/{rule.describe()}/{rule.bias}/{label}",
            ),
        )
    return worst


def _via_propagate(case, rule, seed, as_dict):
    """propagate on a one-node graph: R = onehot(target) * logit with a different target per sample."""
    a, _ = sample_inputs(case, seed)
    graph = case.graph(a.shape[0])
    values = run_forward(graph, {"x": a})
    z_engine = values["y"]
    z = case.forward(a)
    # The op itself: the IR forward equals the dense/torch forward (so W, b describe the node).
    assert torch.allclose(z_engine, z, rtol=0, atol=1e-12 * float(z.abs().max()))
    W, b, _ = case.dense()
    assert torch.allclose(a.reshape(a.shape[0], -1) @ W.T + b, z.reshape(z.shape[0], -1), rtol=0, atol=1e-12)
    n_out = z[0].numel()
    targets = [(3 * s + 1) % n_out for s in range(a.shape[0])]
    rules = {"n0": rule} if as_dict else rule
    prop = propagate(graph, {"x": a}, rules, init="logit", target=targets)
    R = torch.zeros_like(z).reshape(a.shape[0], -1)
    # R = onehot(target) * logit, the logit as the engine's forward computed it (pools round differently from W a)
    R[torch.arange(a.shape[0]), targets] = z_engine.reshape(a.shape[0], -1)[torch.arange(a.shape[0]), targets]
    R = R.reshape(z.shape)
    assert torch.equal(prop.output_relevance, R)
    (rec,) = prop.records
    worst = _compare(
        case,
        rule,
        a,
        z,
        R,
        prop.input_relevance["x"],
        rec.absorbed_bias,
        rec.absorbed_stabilizer,
        rec.degenerate,
        f"{case.name}/{rule.describe()}/{rule.bias}/propagate",
    )
    assert torch.allclose(rec.r_received, _per_sample(R), rtol=0, atol=0)
    assert float((rec.residual.abs() / _per_sample(R.abs())).max()) <= TOL
    assert torch.allclose(prop.r_input, _per_sample(prop.input_relevance["x"]))
    return worst


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("rule_id", [r for r, _ in LINEAR_RULES])
@pytest.mark.parametrize("case_name", [c.name for c in LINEAR_CASES])
def test_linear_type_rule_matches_dense(case_name, rule_id, bias):
    case = CASES[case_name]
    rule = LINEAR_RULE_MAP[rule_id](case, bias)
    seed = sum(map(ord, case_name + rule_id))
    _direct(case, rule, seed)
    _via_propagate(case, rule, seed, as_dict=(bias == "absorb"))


@pytest.mark.parametrize("rule_id", [r for r, _ in POOL_RULES])
@pytest.mark.parametrize("case_name", [c.name for c in POOL_CASES])
def test_pool_rule_matches_dense(case_name, rule_id):
    case = CASES[case_name]
    rule = POOL_RULE_MAP[rule_id](case, "absorb")
    seed = sum(map(ord, case_name + rule_id))
    _direct(case, rule, seed)
    _via_propagate(case, rule, seed, as_dict=True)


@pytest.mark.parametrize("name", ["flat", "zbox"])
def test_bias_free_rules_ignore_the_bias_mode(name):
    """flat has no bias term and zbox's bias cancels: the three bias modes give the same relevance."""
    case = CASES["conv2d_s2_p1"]
    a, _ = sample_inputs(case, 3)
    z = case.forward(a)
    R = torch.randn(z.shape, generator=torch.Generator().manual_seed(4), dtype=DT)
    node = case.node()
    view = linear_view(node, dict(node.params), tuple(a.shape), z.dim())
    results = [apply_linear_rule(Rule(name, bias=m), view, a, z, R) for m in BIAS_MODES]
    for other in results[1:]:
        assert torch.allclose(other.r_in, results[0].r_in, rtol=0, atol=1e-13)
        assert float(other.absorbed_bias.abs().max()) == 0.0


# ---------------------------------------------------------------- engineered degenerate units


def _dead_linear():
    """A linear layer whose units exercise every degenerate path of DESIGN section 6.

    unit 0: all-zero weights, zero bias -> z = 0 (dead for zero/epsilon/gamma; zero contributions everywhere);
    unit 1: all weights positive, zero bias -> with a >= 0 the alphabeta beta branch and zbox have nothing;
    unit 2: all weights negative, positive bias;
    unit 3: generic.
    """
    W = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.5, 1.0, 2.0, 0.25],
            [-1.0, -0.5, -2.0, -1.5],
            [1.0, -2.0, 0.5, -0.75],
        ],
        dtype=DT,
    )
    b = torch.tensor([0.0, 0.0, 1.25, -0.5], dtype=DT)
    from tests.helpers.dense import OpCase

    case = OpCase(
        "dead_linear", "linear", {}, (4,), W, b, lambda x, w, bb: torch.nn.functional.linear(x, w, bb)
    )
    return case, W, b


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("rule_id", [r for r, _ in LINEAR_RULES])
def test_degenerate_units_match_dense(rule_id, bias):
    case, W, b = _dead_linear()
    conn = torch.ones_like(W)
    rule = LINEAR_RULE_MAP[rule_id](case, bias)
    a = torch.tensor([[1.0, 2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 0.0, 2.0]], dtype=DT)
    z = torch.nn.functional.linear(a, W, b)
    R = torch.tensor([[1.0, -2.0, 0.5, 3.0], [2.0, 1.0, -1.0, 0.5], [0.75, 1.5, -0.5, 1.0]], dtype=DT)
    node = case.node()
    view = linear_view(node, dict(node.params), tuple(a.shape), z.dim())
    res = apply_linear_rule(rule, view, a, z, R)
    saw_degenerate = False
    for s in range(a.shape[0]):
        ref = dense_rule(rule.name, rule_params(rule), rule.bias, W, b, conn, a[s], z[s], R[s])
        scale = float(R[s].abs().sum())
        assert float((res.r_in[s] - ref.r_in).abs().max()) <= TOL * scale
        assert abs(float(res.absorbed_bias[s]) - ref.absorbed_bias) <= TOL * scale
        assert abs(float(res.absorbed_stabilizer[s]) - ref.absorbed_stabilizer) <= TOL * scale
        assert abs(float(res.degenerate[s]) - ref.degenerate) <= TOL * scale
        saw_degenerate |= ref.degenerate != 0
    # Unit 0 is dead (z = 0, all contributions zero) for every activation-dependent rule: it must show up.
    if rule.name in ("zero", "epsilon", "gamma", "alphabeta", "zplus"):
        assert saw_degenerate, "the dead unit carried relevance but nothing was reported as degenerate"


def test_degenerate_values_by_hand():
    """Three dead-unit cases whose degenerate share is obvious without any formula."""
    case, W, b = _dead_linear()
    node = case.node()
    a = torch.tensor([[1.0, 2.0, 0.0, 0.5]], dtype=DT)
    z = torch.nn.functional.linear(a, W, b)
    R = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=DT)  # relevance only on the dead unit 0
    view = linear_view(node, dict(node.params), tuple(a.shape), z.dim())
    # LRP-0: D = 0, nothing passes, the whole R_0 = 1 is degenerate.
    res = apply_linear_rule(Rule("zero"), view, a, z, R)
    assert float(res.r_in.abs().sum()) == 0.0 and float(res.degenerate[0]) == 1.0
    # epsilon: D = 0 + eps * sign(0) = +eps, Z = 0: the stabilizer takes R_0 * eps / eps = 1, degenerate.
    res = apply_linear_rule(Rule("epsilon"), view, a, z, R)
    assert float(res.r_in.abs().sum()) == 0.0 and float(res.degenerate[0]) == 1.0
    assert float(res.absorbed_stabilizer[0]) == 0.0
    # gamma: z_0 = 0 passes nothing.
    res = apply_linear_rule(Rule("gamma"), view, a, z, R)
    assert float(res.r_in.abs().sum()) == 0.0 and float(res.degenerate[0]) == 1.0
    # alphabeta(2,1) on unit 1 (all w > 0, a >= 0, b = 0): the beta branch is empty; its D = +stab, so it
    # takes -beta * R_1 * stab / stab = -1 as degenerate, and the alpha branch passes 2 * R_1 (minus 2 R_1 stab/D).
    R1 = torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=DT)
    res = apply_linear_rule(Rule("alphabeta"), view, a, z, R1)
    z1 = 0.5 * 1.0 + 1.0 * 2.0 + 0.25 * 0.5
    assert abs(float(res.degenerate[0]) - (-1.0)) <= 1e-15
    assert abs(float(res.r_in.sum()) - 2.0 * z1 / (z1 + 1e-6)) <= 1e-15
    assert abs(float(res.absorbed_stabilizer[0]) - 2.0 * 1e-6 / (z1 + 1e-6)) <= 1e-15


def test_rule_defaults_are_the_documented_ones():
    """DESIGN section 5: epsilon 1e-6, gamma 0.25, alphabeta alpha=2 beta=1, stabilizer 1e-6 for the others
    (Zennit's defaults), LRP-0 without stabilizer, bias mode absorb."""
    assert Rule("epsilon").get("epsilon") == 1e-6
    assert Rule("gamma").get("gamma") == 0.25 and Rule("gamma").get("stabilizer") == 1e-6
    assert (Rule("alphabeta").get("alpha"), Rule("alphabeta").get("beta")) == (2.0, 1.0)
    for name in ("alphabeta", "zplus", "wsquare", "flat", "zbox", "norm"):
        assert Rule(name).get("stabilizer") == 1e-6, name
    assert Rule("zero").get("stabilizer") == 0.0
    assert Rule("zero").bias == "absorb"
