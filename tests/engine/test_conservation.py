"""Closed-form oracles for conservation (DESIGN section 10), none of which uses the engine's own numbers.

(a) LRP-0 with ``absorb`` on ReLU / max-pool nets (average pools and adds also without stabilizer) is gradient x
    input: the input map equals ``x * grad f_t(x)`` (torch autograd on the float64 torch model), so
    ``sum R_input = x . grad f_t(x)`` and the end-to-end leak is ``f_t(x) - x . grad f_t(x)`` (the bias share).
(b) Bias-free nets conserve layer by layer under zero, zplus, wsquare, flat, zbox (stabilizer 0) and epsilon
    (epsilon = 1e-12). What is asserted, per record: ``|leak - degenerate| <= 1e-12 * scale`` (degenerate units,
    e.g. a z+ unit with no positive contribution, legitimately lose their relevance and are *reported*, not
    hidden), and on records with no degenerate unit ``|leak| <= 1e-12 * scale``. For epsilon the stabilizer's own
    share (~eps / |z_j|) is also allowed for, and it is checked to be of that size.
(c) With ``bias="distribute"`` (and ``"ignore"``) every rule conserves: with the stabilizer set to 0,
    ``|leak - degenerate| <= 1e-12 * scale`` per record; with default stabilizers the leak is exactly the
    stabilizer share plus degenerate units, and the bias share is zero.
(d) ``test_user_report_2x2_single_layer_bias``: the 2x2 single-layer case computed by hand.
(e) Residual nets: the proportional ``add`` rule by hand, and accumulation at a value with several consumers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrpaudit.ir import Graph, Node
from lrpaudit.propagate import propagate
from lrpaudit.rules.spec import Rule
from tests.helpers.engine_models import onnx_graph, onnx_round_trip, rules_for

DT = torch.float64


def _per_sample(t):
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _input_and_targets(graph: Graph, seed: int):
    shape = graph.shapes[graph.inputs[0]]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    n_out = 1
    for d in graph.shapes[graph.outputs[0]][1:]:
        n_out *= d
    targets = [(7 * s + 2) % n_out for s in range(shape[0])]
    return x, targets


# ---------------------------------------------------------------- (a) LRP-0 = gradient x input


GRAD_X_INPUT_NETS = [
    ("ref", "mlp_bn"),
    ("ref", "cnn_bn"),
    ("ref", "vgg_like"),
    ("ref", "residual"),
    ("ref", "resnet_like"),
    ("ref", "conv_transpose"),
    ("local", "mlp"),
    ("local", "cnn"),
    ("local", "residual"),
]


@pytest.mark.parametrize("kind,name", GRAD_X_INPUT_NETS)
def test_lrp0_absorb_is_gradient_times_input(kind, name):
    model, graph = onnx_graph(kind, name, True, 2)
    x, targets = _input_and_targets(graph, seed=11)
    # the oracle: torch autograd on the float64 torch model
    xg = x.clone().requires_grad_(True)
    out = model(xg).reshape(x.shape[0], -1)
    f = out[torch.arange(x.shape[0]), targets]
    (grad,) = torch.autograd.grad(f.sum(), xg)
    x_grad = (x * grad).detach()
    f = f.detach()
    # rule zero everywhere (pools included), adds proportional without stabilizer
    rules = rules_for(Rule("zero"), Rule("zero"), Rule("norm", stabilizer=0.0))
    prop = propagate(graph, {"x": x}, rules, init="logit", target=targets)
    r_map = prop.input_relevance["x"]
    for s in range(x.shape[0]):
        scale = max(abs(float(f[s])), float(x_grad[s].abs().sum()))
        assert abs(float(prop.r_output[s]) - float(f[s])) <= 1e-10 * scale  # same function
        assert abs(float(prop.r_input[s]) - float(x_grad[s].sum())) <= 1e-10 * scale
        expected_leak = float(f[s]) - float(x_grad[s].sum())
        assert abs(float(prop.leak[s]) - expected_leak) <= 1e-10 * scale
        assert float((r_map[s] - x_grad[s]).abs().max()) <= 1e-10 * scale
        # the leak is all bias: nothing else absorbed, nothing degenerate, nothing unexplained
        assert abs(float(prop.total("absorbed_bias")[s]) - expected_leak) <= 1e-10 * scale
        assert float(prop.total("absorbed_stabilizer")[s]) == 0.0
        assert float(prop.total("degenerate")[s]) == 0.0
        assert abs(float(prop.total("residual")[s])) <= 1e-10 * scale
    # a net with biases really leaks (the oracle is not vacuous)
    assert float(prop.leak.abs().max()) > 1e-6 * float(prop.r_output.abs().max())


# ---------------------------------------------------------------- (b) bias-free nets conserve per layer


def _conservation_failures(prop, tol: float, allow_stabilizer: bool = False) -> list[str]:
    """Records breaking ``|leak - degenerate| <= tol * scale`` (and ``|leak| <= tol * scale`` where nothing is
    degenerate). With ``allow_stabilizer`` the stabilizer's share may also be missing."""
    bad = []
    for rec in prop.records:
        scale = rec.scale
        unexplained = rec.leak - rec.degenerate
        if allow_stabilizer:
            unexplained = unexplained - rec.absorbed_stabilizer
        for s in range(scale.shape[0]):
            if float(scale[s]) == 0:
                assert float(rec.leak[s]) == 0.0
                continue
            if abs(float(unexplained[s])) > tol * float(scale[s]):
                bad.append(f"{rec.node_id} ({rec.op}, {rec.rule}) sample {s}: {float(unexplained[s]):.3e}")
            if (
                float(rec.degenerate[s]) == 0
                and not allow_stabilizer
                and abs(float(rec.leak[s])) > tol * float(scale[s])
            ):
                bad.append(f"{rec.node_id} sample {s}: leak {float(rec.leak[s]):.3e} with nothing degenerate")
    return bad


BIAS_FREE_RULES = [
    ("zero", Rule("zero"), Rule("zero")),
    ("zplus", Rule("zplus", stabilizer=0.0), Rule("norm", stabilizer=0.0)),
    ("wsquare", Rule("wsquare", stabilizer=0.0), Rule("norm", stabilizer=0.0)),
    ("flat", Rule("flat", stabilizer=0.0), Rule("flat", stabilizer=0.0)),
    ("zbox", Rule("zbox", stabilizer=0.0, low=-3.0, high=3.0), Rule("norm", stabilizer=0.0)),
    ("epsilon1e-12", Rule("epsilon", epsilon=1e-12), Rule("epsilon", epsilon=1e-12)),
]


@pytest.mark.parametrize("rule_id,linear,pool", BIAS_FREE_RULES, ids=[r[0] for r in BIAS_FREE_RULES])
@pytest.mark.parametrize("name", ["mlp", "cnn", "residual"])
def test_bias_free_nets_conserve_per_layer(name, rule_id, linear, pool):
    _, graph = onnx_graph("local", name, False, 3)
    assert all("bias" not in node.params for node in graph.nodes)
    x, targets = _input_and_targets(graph, seed=5)
    add = Rule("norm", stabilizer=1e-12) if rule_id.startswith("epsilon") else Rule("norm", stabilizer=0.0)
    prop = propagate(graph, {"x": x}, rules_for(linear, pool, add), init="logit", target=targets)
    if not rule_id.startswith("epsilon"):
        assert _conservation_failures(prop, 1e-12) == []
    else:
        # eps = 1e-12 is not zero: its own share eps / (z + eps sign z) may go too, and it is that small
        assert _conservation_failures(prop, 1e-12, allow_stabilizer=True) == []
        for rec in prop.records:
            assert float((rec.absorbed_stabilizer.abs() - 1e-9 * rec.scale).max()) <= 0
    for rec in prop.records:
        assert float(rec.absorbed_bias.abs().max()) == 0.0
    # end to end: everything that left is reported as degenerate (or the tiny epsilon share)
    explained = prop.total("degenerate") + prop.total("absorbed_stabilizer")
    assert float(((prop.leak - explained).abs() - 1e-12 * prop.output_scale).max()) <= 0
    degenerate = float(prop.total("degenerate").abs().max())
    print(
        f"{name}/{rule_id}: worst |degenerate| {degenerate:.3e}, worst rel_error {float(prop.rel_error.max()):.3e}"
    )


def test_degenerate_unit_is_reported_not_hidden():
    """A z+ unit with no positive contribution (all weights < 0 on a non-negative input, no bias) gets relevance
    from a wsquare layer above it (wsquare sends relevance regardless of activations): with stabilizer 0 its
    D = 0, it passes nothing, and exactly its relevance is reported as degenerate."""
    w1 = torch.tensor([[1.0, 0.5, 2.0], [-1.0, -2.0, -0.5], [0.5, -1.0, 1.0]], dtype=DT)
    w2 = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 1.5]], dtype=DT)
    graph = Graph(
        ["x"],
        ["y"],
        [
            Node("fc1", "linear", ["x"], ["h"], {}, {"weight": w1}),
            Node("relu", "relu", ["h"], ["r"]),
            Node("fc2", "linear", ["r"], ["y"], {}, {"weight": w2}),
        ],
    )
    x = torch.tensor([[1.0, 2.0, 0.5]], dtype=DT)
    rules = {"fc1": Rule("zplus", stabilizer=0.0), "fc2": Rule("wsquare", stabilizer=0.0)}
    prop = propagate(graph, {"x": x}, rules, init="one", target=0)
    fc1, _, fc2 = prop.records
    # by hand: fc2 (wsquare) sends R_j w_jk^2 / sum_k w_jk^2 to each k: with R = onehot(0), unit 1 gets 4/6.
    assert abs(float(fc2.leak[0])) <= 1e-15
    assert abs(float(fc1.r_received[0]) - 1.0) <= 1e-15
    assert abs(float(fc1.degenerate[0]) - 4.0 / 6.0) <= 1e-15
    assert abs(float(fc1.leak[0]) - 4.0 / 6.0) <= 1e-15
    assert float(fc1.absorbed_bias[0]) == 0.0 and float(fc1.absorbed_stabilizer[0]) == 0.0
    assert abs(float(fc1.residual[0])) <= 1e-15


# ---------------------------------------------------------------- (c) distribute / ignore conserve for every rule


ALL_RULES_STAB0 = [
    ("zero", dict()),
    ("epsilon", dict(epsilon=0.0)),
    ("gamma", dict(stabilizer=0.0)),
    ("alphabeta", dict(stabilizer=0.0)),
    ("alphabeta10", dict(alpha=1.0, beta=0.0, stabilizer=0.0)),
    ("zplus", dict(stabilizer=0.0)),
    ("wsquare", dict(stabilizer=0.0)),
    ("flat", dict(stabilizer=0.0)),
    ("zbox", dict(stabilizer=0.0, low=-4.0, high=4.0)),
]


def _rule(rule_id: str, bias: str, **params) -> Rule:
    return Rule("alphabeta" if rule_id == "alphabeta10" else rule_id, bias=bias, **params)


BIASED_NETS = [
    ("ref", "mlp_bn"),
    ("ref", "cnn_bn"),
    ("ref", "residual"),
    ("ref", "conv_transpose"),
    ("local", "cnn"),
]


@pytest.mark.parametrize("bias", ["distribute", "ignore"])
@pytest.mark.parametrize("kind,name", BIASED_NETS)
def test_distribute_and_ignore_conserve_every_rule(kind, name, bias):
    _, graph = onnx_graph(kind, name, True, 2)
    assert any("bias" in node.params for node in graph.nodes)
    x, targets = _input_and_targets(graph, seed=3)
    failures = []
    for rule_id, params in ALL_RULES_STAB0:
        rule = _rule(rule_id, bias, **params)
        rules = rules_for(rule, Rule("norm", stabilizer=0.0), Rule("norm", stabilizer=0.0))
        prop = propagate(graph, {"x": x}, rules, init="logit", target=targets)
        failures += [f"{rule_id}: {msg}" for msg in _conservation_failures(prop, 1e-12)]
        for rec in prop.records:
            assert float(rec.absorbed_bias.abs().max()) == 0.0, (
                f"{rule_id} {rec.node_id}: bias share under {bias}"
            )
            assert float(rec.absorbed_stabilizer.abs().max()) == 0.0
        # with the default stabilizers: the leak is the stabilizer's share plus degenerate units, no bias share
        default = _rule(
            rule_id, bias, **{k: v for k, v in params.items() if k in ("alpha", "beta", "low", "high")}
        )
        prop = propagate(graph, {"x": x}, rules_for(default, Rule("norm"), Rule("norm")), target=targets)
        failures += [f"{rule_id}/default: {msg}" for msg in _conservation_failures(prop, 1e-12, True)]
        assert float(prop.total("absorbed_bias").abs().max()) == 0.0
    assert failures == []


# ---------------------------------------------------------------- (d) the user's 2x2 case


def _two_by_two_graph():
    """nn.Linear(2, 2) with W = [[2, 1], [1, -3]] (out x in), b = [1, 2], exported to ONNX and loaded."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 1.0], [1.0, -3.0]]))
        layer.bias.copy_(torch.tensor([1.0, 2.0]))
    graph = onnx_round_trip(layer.eval(), torch.zeros(2, 2))
    assert [node.op for node in graph.nodes] == ["linear"]
    return graph


def test_user_report_2x2_single_layer_bias():
    """The case reported against another library: "relevances not conserved with alpha1-beta0, w-square and
    bounded rules". Single layer, x = [1, -1] (mixed signs), W = [[2, 1], [1, -3]] (row j = output j), b = [1, 2].

        z_0 = 2*1 + 1*(-1) + 1 = 2          z_1 = 1*1 + (-3)*(-1) + 2 = 6

    Two samples with the same x and targets 0 and 1, init="logit": R_0 = z_0 = 2 resp. R_1 = z_1 = 6. The shares,
    by hand (eps = the default stabilizer 1e-6, additive with the sign of the denominator):

    zplus (alpha1-beta0, signed inputs: Z_ij = a+ w+ + a- w-, B = b+):
        unit 0: Z = [1*2, 0] (a_1 = -1 < 0 meets w = 1 > 0: no a- w- part), B = 1, D = 3 + eps
                bias share = 2 * 1 / (3 + eps)
        unit 1: Z = [1*1, (-1)*(-3)] = [1, 3], B = 2, D = 6 + eps; bias share = 6 * 2 / (6 + eps)
    wsquare (Z_ij = w^2, B = b^2):
        unit 0: Z = [4, 1], B = 1, D = 6 + eps;   bias share = 2 * 1 / (6 + eps)
        unit 1: Z = [1, 9], B = 4, D = 14 + eps;  bias share = 6 * 4 / (14 + eps)
    zbox (low = -2, high = 2: Z_ij = a w - l w+ - h w-, the bias cancels):
        unit 0: Z = [1*2 + 2*2, (-1)*1 + 2*1] = [6, 1], D = 7 + eps;  bias share 0
        unit 1: Z = [1*1 + 2*1, (-1)*(-3) - 2*(-3)] = [3, 9], D = 12 + eps;  bias share 0
    distribute (stabilizer 0): the bias is spread over both inputs, every unit conserves exactly.
    """
    eps = 1e-6
    graph = _two_by_two_graph()
    x = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=DT)
    targets = [0, 1]
    R = [2.0, 6.0]
    hand = {
        "zplus": {
            "r_in": [[2 * 2 / (3 + eps), 2 * 0 / (3 + eps)], [6 * 1 / (6 + eps), 6 * 3 / (6 + eps)]],
            "bias": [2 * 1 / (3 + eps), 6 * 2 / (6 + eps)],
            "stab": [2 * eps / (3 + eps), 6 * eps / (6 + eps)],
        },
        "wsquare": {
            "r_in": [[2 * 4 / (6 + eps), 2 * 1 / (6 + eps)], [6 * 1 / (14 + eps), 6 * 9 / (14 + eps)]],
            "bias": [2 * 1 / (6 + eps), 6 * 4 / (14 + eps)],
            "stab": [2 * eps / (6 + eps), 6 * eps / (14 + eps)],
        },
        "zbox": {
            "r_in": [[2 * 6 / (7 + eps), 2 * 1 / (7 + eps)], [6 * 3 / (12 + eps), 6 * 9 / (12 + eps)]],
            "bias": [0.0, 0.0],
            "stab": [2 * eps / (7 + eps), 6 * eps / (12 + eps)],
        },
    }
    rules = {
        "zplus": Rule("zplus"),
        "alphabeta10": Rule("alphabeta", alpha=1.0, beta=0.0),
        "wsquare": Rule("wsquare"),
        "zbox": Rule("zbox", low=-2.0, high=2.0),
    }
    for rule_id, rule in rules.items():
        want = hand["zplus" if rule_id == "alphabeta10" else rule_id]
        prop = propagate(graph, {"x": x}, rule, init="logit", target=targets)
        (rec,) = prop.records
        for s in range(2):
            assert float(prop.r_output[s]) == R[s]
            got = prop.input_relevance["x"][s]
            for i in range(2):
                assert abs(float(got[i]) - want["r_in"][s][i]) <= 1e-15 * R[s], (rule_id, s, i)
            assert abs(float(rec.absorbed_bias[s]) - want["bias"][s]) <= 1e-15 * R[s], (rule_id, s)
            assert abs(float(rec.absorbed_stabilizer[s]) - want["stab"][s]) <= 1e-15 * R[s], (rule_id, s)
            assert float(rec.degenerate[s]) == 0.0
            assert abs(float(rec.residual[s])) <= 1e-15 * R[s]
            # the leak is exactly the bias share plus the stabilizer share
            leak = R[s] - sum(want["r_in"][s])
            assert abs(float(rec.leak[s]) - leak) <= 1e-15 * R[s]
            assert abs(leak - want["bias"][s] - want["stab"][s]) <= 1e-15 * R[s]
        # distribute, stabilizer 0: conservation to machine precision
        spread = Rule(rule.name, bias="distribute", stabilizer=0.0, **rule.params)
        prop = propagate(graph, {"x": x}, spread, init="logit", target=targets)
        (rec,) = prop.records
        for s in range(2):
            assert abs(float(prop.leak[s])) <= 1e-15 * R[s], (rule_id, s, float(prop.leak[s]))
            assert abs(float(rec.leak[s])) <= 1e-15 * R[s]
            assert float(rec.absorbed_bias[s]) == 0.0
        # and by hand for zplus: unit 0 gets Z = [2 + 1/2, 0 + 1/2] over D = 3: R = 2 * [5/6, 1/6]
        if rule_id == "zplus":
            got = prop.input_relevance["x"]
            assert (
                abs(float(got[0, 0]) - 2 * 2.5 / 3) <= 1e-15 and abs(float(got[0, 1]) - 2 * 0.5 / 3) <= 1e-15
            )
            assert (
                abs(float(got[1, 0]) - 6 * 2.0 / 6) <= 1e-15 and abs(float(got[1, 1]) - 6 * 4.0 / 6) <= 1e-15
            )


# ---------------------------------------------------------------- (e) residual nets


def test_add_splits_proportionally_by_hand():
    """y = u + v on two graph inputs: R_u = u / (u + v + eps sign(u + v)) R, R_v likewise."""
    eps = 1e-6
    graph = Graph(["u", "v"], ["y"], [Node("add", "add", ["u", "v"], ["y"])])
    u = torch.tensor([[3.0, -1.0], [-3.0, 0.5]], dtype=DT)
    v = torch.tensor([[1.0, 2.0], [1.0, 0.25]], dtype=DT)
    # sample 0: target 0, y = 4, R = 4;  sample 1: target 0, y = -2 (negative sum: eps enters with sign -1)
    prop = propagate(graph, {"u": u, "v": v}, {}, init="logit", target=0)
    r_u, r_v = prop.input_relevance["u"], prop.input_relevance["v"]
    assert abs(float(r_u[0, 0]) - 3.0 / (4.0 + eps) * 4.0) <= 1e-15
    assert abs(float(r_v[0, 0]) - 1.0 / (4.0 + eps) * 4.0) <= 1e-15
    assert abs(float(r_u[1, 0]) - (-3.0) / (-2.0 - eps) * (-2.0)) <= 1e-15
    assert abs(float(r_v[1, 0]) - 1.0 / (-2.0 - eps) * (-2.0)) <= 1e-15
    assert float(r_u[:, 1].abs().sum()) == 0.0 and float(r_v[:, 1].abs().sum()) == 0.0
    (rec,) = prop.records
    # what is missing is the stabilizer's share R * eps sign / (z + eps sign)
    assert abs(float(rec.absorbed_stabilizer[0]) - 4.0 * eps / (4.0 + eps)) <= 1e-15
    assert abs(float(rec.absorbed_stabilizer[1]) - (-2.0) * (-eps) / (-2.0 - eps)) <= 1e-15
    assert abs(float(rec.residual.abs().max())) <= 1e-15
    # a custom stabilizer via the rules dict
    prop = propagate(graph, {"u": u, "v": v}, {"add": Rule("norm", stabilizer=0.5)}, init="logit", target=0)
    assert abs(float(prop.input_relevance["u"][0, 0]) - 3.0 / 4.5 * 4.0) <= 1e-15
    assert abs(float(prop.input_relevance["u"][1, 0]) - (-3.0) / (-2.5) * (-2.0)) <= 1e-15


def test_relevance_accumulates_at_a_skip_connection():
    """h = relu(fc1 x) feeds both fc2 and the add (a skip): R(h) = add's share for h + fc2's relevance for its input.

    Every piece by hand with the epsilon rule written out (no dense helper): R_a = a / (a + b + eps s) R for the
    add, and R_i = sum_j a_i w_ij / (z_j + eps s_j) R_j for fc2 (no bias)."""
    gen = torch.Generator().manual_seed(4)  # h = relu(fc1 x) has live units, fc2 mixes signs
    w1 = torch.randn(4, 3, generator=gen, dtype=DT)
    w2 = torch.randn(4, 4, generator=gen, dtype=DT)
    w3 = torch.randn(2, 4, generator=gen, dtype=DT)
    graph = Graph(
        ["x"],
        ["y"],
        [
            Node("fc1", "linear", ["x"], ["z1"], {}, {"weight": w1}),
            Node("relu", "relu", ["z1"], ["h"]),
            Node("fc2", "linear", ["h"], ["g"], {}, {"weight": w2}),
            Node("add", "add", ["h", "g"], ["s"]),
            Node("fc3", "linear", ["s"], ["y"], {}, {"weight": w3}),
        ],
    )
    x = torch.tensor([[1.0, -0.5, 2.0]], dtype=DT)
    eps = 1e-6
    keep: dict[str, torch.Tensor] = {}
    prop = propagate(graph, {"x": x}, Rule("epsilon"), init="one", target=1, keep_relevance=keep)

    def sgn(t):
        return torch.where(t >= 0, 1.0, -1.0).to(DT)

    h = torch.relu(x @ w1.T)[0]
    g = h @ w2.T
    s = h + g
    y = s @ w3.T
    R_y = torch.tensor([0.0, 1.0], dtype=DT)
    R_s = torch.stack(
        [sum(s[i] * w3[j, i] / (y[j] + eps * sgn(y[j])) * R_y[j] for j in range(2)) for i in range(4)]
    )
    R_h_from_add = h / (s + eps * sgn(s)) * R_s
    R_g = g / (s + eps * sgn(s)) * R_s
    R_h_from_fc2 = torch.stack(
        [sum(h[i] * w2[j, i] / (g[j] + eps * sgn(g[j])) * R_g[j] for j in range(4)) for i in range(4)]
    )
    # keep["relu"] is the relevance that arrived at the relu's output h, from both consumers
    assert torch.allclose(keep["relu"][0], R_h_from_add + R_h_from_fc2, rtol=0, atol=1e-14)
    assert float((R_h_from_fc2.abs()).sum()) > 1e-3 and float(R_h_from_add.abs().sum()) > 1e-3
    relu_rec = next(r for r in prop.records if r.node_id == "relu")
    assert abs(float(relu_rec.r_received[0]) - float((R_h_from_add + R_h_from_fc2).sum())) <= 1e-14
