"""The engine refuses loudly: ops without a rule, missing or invalid rules, bad targets; plus init/target semantics
and the trailing-softmax pass (DESIGN sections 5 and 7)."""

from __future__ import annotations

import pytest
import torch

from lrpaudit.errors import ConfigError, InputError, LrpauditError, UnsupportedOpError
from lrpaudit.ir import Graph, Node
from lrpaudit.passes import mark_gates, strip_output_softmax
from lrpaudit.propagate import propagate
from lrpaudit.rules.spec import Rule

DT = torch.float64


def _w(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _x(batch=2, n=3, seed=1):
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _mlp_with(middle: list[Node], out_in: str) -> Graph:
    """fc1 -> <middle nodes> -> fc2, fc1 reading x (3 -> 4), fc2 reading ``out_in`` (4 -> 2)."""
    return Graph(
        ["x"],
        ["y"],
        [Node("fc1", "linear", ["x"], ["h"], {}, {"weight": _w(4, 3), "bias": _w(4, seed=1)})]
        + middle
        + [Node("fc2", "linear", [out_in], ["y"], {}, {"weight": _w(2, 4, seed=2)})],
    )


# ---------------------------------------------------------------- ops without a rule


def test_log_softmax_in_the_middle_is_refused_naming_the_node():
    graph = _mlp_with([Node("attn_logsoftmax", "log_softmax", ["h"], ["p"], {"axis": -1})], "p")
    with pytest.raises(UnsupportedOpError, match="attn_logsoftmax") as info:
        propagate(graph, {"x": _x()}, Rule("epsilon"))
    assert "log_softmax" in str(info.value)
    assert isinstance(info.value, LrpauditError) and info.value.exit_code == 2


def _transformer_ops_graph() -> Graph:
    middle = [
        Node("norm", "layernorm", ["h"], ["n"], {"axes": (-1,), "eps": 1e-5}, {"bias": _w(4, seed=3)}),
        Node("probs", "softmax", ["n"], ["p"], {"axis": -1}),
        Node("sig", "sigmoid", ["n"], ["g"]),
        Node("gated", "mul", ["n", "g"], ["ng"]),
        Node("lin", "linear", ["n"], ["l"], {}, {"weight": _w(4, 4, seed=5)}),
        Node("product", "mul", ["l", "n"], ["m"]),
        Node("both", "add", ["m", "ng"], ["s"]),
        Node("col", "reshape", ["s"], ["mc"], {"shape": (-1, 4, 1)}),
        Node("row", "reshape", ["p"], ["pr"], {"shape": (-1, 1, 4)}),
        Node("outer", "matmul", ["mc", "pr"], ["o"]),
        Node("flat", "reshape", ["o"], ["of"], {"shape": (-1, 16)}),
        Node("fc_mid", "linear", ["of"], ["q"], {}, {"weight": _w(4, 16, seed=4)}),
    ]
    return mark_gates(_mlp_with(middle, "q"))


LINEAR_RULES = {name: Rule("epsilon") for name in ("fc1", "lin", "fc_mid", "fc2")}


def test_transformer_ops_get_attnlrp_rules_by_default():
    from lrpaudit.rules.assign import assign

    graph = _transformer_ops_graph()
    rules = assign(graph, Rule("epsilon")).rules
    chosen = {node_id: rules[node_id].name for node_id in ("norm", "probs", "gated", "product", "outer")}
    assert chosen == {
        "norm": "norm_identity",
        "probs": "taylor",
        "gated": "gate",  # a recognized gate keeps its rule
        "product": "uniform",
        "outer": "uniform",
    }
    prop = propagate(graph, {"x": _x()}, Rule("epsilon"))
    assert all(bool(torch.isfinite(r.residual).all()) for r in prop.records)


def test_the_gate_rule_on_a_product_without_a_gate_is_refused_naming_the_node():
    graph = _transformer_ops_graph()
    assert graph.node("product").attrs.get("gate") is None  # neither input is a bounded gate
    with pytest.raises(UnsupportedOpError, match="product"):
        propagate(graph, {"x": _x()}, dict(LINEAR_RULES, product=Rule("gate")))


def test_constant_factor_finds_the_attention_weights_and_refuses_a_product_without_a_constant():
    from lrpaudit.rules.assign import assign

    graph = _transformer_ops_graph()
    cp = dict(LINEAR_RULES, outer=Rule("constant_factor"), product=Rule("constant_factor"))
    cp["gated"] = Rule("constant_factor")
    rules = assign(graph, cp).rules
    assert rules["outer"].get("factor") == 1  # the softmax output, seen through a reshape
    assert rules["product"].get("factor") == -1  # neither factor is a softmax or an activation output
    assert rules["gated"].get("factor") == 1  # the recognized gate
    with pytest.raises(ConfigError, match="product.*factor: 0 or 1"):
        propagate(graph, {"x": _x()}, cp)
    propagate(graph, {"x": _x()}, dict(cp, product=Rule("constant_factor", factor=0)))


def test_mul_with_a_sigmoid_gate_sends_everything_to_the_gated_input():
    middle = [Node("s", "sigmoid", ["h"], ["g"]), Node("gated", "mul", ["h", "g"], ["p"])]
    graph = mark_gates(_mlp_with(middle, "p"))
    assert graph.node("gated").attrs.get("gate") == 1
    keep: dict[str, torch.Tensor] = {}
    prop = propagate(graph, {"x": _x()}, Rule("zero"), keep_relevance=keep)
    rec = {r.node_id: r for r in prop.records}
    assert float(rec["gated"].leak.abs().max()) <= 1e-15  # exactly conserved
    # the sigmoid (the gate's producer) receives nothing
    assert float(keep["s"].abs().max()) == 0.0
    assert torch.equal(rec["s"].r_received, torch.zeros(2, dtype=DT))


# ---------------------------------------------------------------- rule configuration


def test_linear_type_nodes_without_a_rule_are_listed():
    graph = Graph(
        ["x"],
        ["y"],
        [
            Node("fc1", "linear", ["x"], ["h"], {}, {"weight": _w(4, 3)}),
            Node("act", "relu", ["h"], ["r"]),
            Node("bn", "affine", ["r"], ["s"], {}, {"weight": _w(4), "bias": _w(4)}),
            Node("fc2", "linear", ["s"], ["y"], {}, {"weight": _w(2, 4)}),
        ],
    )
    with pytest.raises(ConfigError) as info:
        propagate(graph, {"x": _x()}, {"fc2": Rule("epsilon")})
    message = str(info.value)
    assert "fc1" in message and "bn" in message and "fc2" not in message
    with pytest.raises(ConfigError, match="fc1"):
        propagate(graph, {"x": _x()}, lambda node: Rule("zero") if node.id in ("bn", "fc2") else None)
    # all covered: runs
    propagate(graph, {"x": _x()}, {"fc1": Rule("zplus"), "bn": Rule("epsilon"), "fc2": Rule("epsilon")})


def test_a_rule_on_an_op_it_does_not_apply_to_is_refused():
    graph = Graph(
        ["x"],
        ["y"],
        [
            Node("pool", "global_avgpool", ["x"], ["p"], {"keepdims": False}),
            Node("fc", "linear", ["p"], ["y"], {}, {"weight": _w(2, 3)}),
        ],
    )
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    with pytest.raises(ConfigError, match="pool"):
        propagate(graph, {"x": x}, {"pool": Rule("wsquare"), "fc": Rule("zero")})
    propagate(graph, {"x": x}, {"pool": Rule("flat"), "fc": Rule("zero")})


@pytest.mark.parametrize(
    "make",
    [
        lambda: Rule("alphabeta", alpha=3.0, beta=1.0),  # alpha - beta = 2
        lambda: Rule("alphabeta", alpha=1.0, beta=1.0),  # alpha - beta = 0
        lambda: Rule("alphabeta", alpha=0.5),  # with the default beta = 1
        lambda: Rule("alphabeta", alpha=-1.0, beta=-2.0),  # alpha - beta = 1 but negative
        lambda: Rule("epsilon", epsilon=-1e-6),
        lambda: Rule("gamma", gamma=-0.25),
        lambda: Rule("zplus", stabilizer=-1.0),
        lambda: Rule("epsilon", epsilon=float("nan")),
        lambda: Rule("wsquare", stabilizer=float("inf")),
        lambda: Rule("zplus", gamma=0.25),  # a parameter the rule does not take
        lambda: Rule("epsilon", bias="spread"),  # unknown bias mode
        lambda: Rule("lrp-epsilon"),  # unknown rule
    ],
)
def test_invalid_rules_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_zbox_bounds_that_do_not_fit_the_input_are_config_errors():
    graph = Graph(["x"], ["y"], [Node("fc", "linear", ["x"], ["y"], {}, {"weight": _w(2, 3)})])
    bad = Rule("zbox", low=-torch.ones(5, dtype=DT), high=torch.ones(5, dtype=DT))
    with pytest.raises(ConfigError, match="zbox"):
        propagate(graph, {"x": _x()}, bad, init="one", target=0)


# ---------------------------------------------------------------- init and target


def _single_linear():
    w, b = _w(3, 4), _w(3, seed=3)
    graph = Graph(["x"], ["y"], [Node("fc", "linear", ["x"], ["y"], {}, {"weight": w, "bias": b})])
    x = _x(batch=3, n=4, seed=5)
    return graph, x, x @ w.T + b


def test_init_logit_and_one():
    graph, x, z = _single_linear()
    targets = [2, 0, 1]
    prop = propagate(graph, {"x": x}, Rule("zero"), init="logit", target=targets)
    expected = torch.zeros_like(z)
    for s, t in enumerate(targets):
        expected[s, t] = z[s, t]
    assert torch.allclose(prop.output_relevance, expected, rtol=0, atol=1e-15)
    assert torch.allclose(prop.r_output, z[torch.arange(3), targets], rtol=0, atol=1e-15)
    prop_one = propagate(graph, {"x": x}, Rule("zero"), init="one", target=targets)
    onehot = torch.zeros_like(z)
    onehot[torch.arange(3), targets] = 1.0
    assert torch.equal(prop_one.output_relevance, onehot)
    assert torch.equal(prop_one.r_output, torch.ones(3, dtype=DT))
    # LRP-0 is linear in R: the "one" map is the "logit" map divided by the logit
    ratio = prop.input_relevance["x"] / z[torch.arange(3), targets].reshape(3, 1)
    assert torch.allclose(prop_one.input_relevance["x"], ratio, rtol=0, atol=1e-14)
    with pytest.raises(ConfigError, match="init"):
        propagate(graph, {"x": x}, Rule("zero"), init="softmax")


def test_target_int_list_and_predicted():
    graph, x, z = _single_linear()
    prop = propagate(graph, {"x": x}, Rule("zero"), init="one", target=1)
    assert prop.targets.tolist() == [1, 1, 1]
    assert torch.equal(prop.output_relevance[:, 1], torch.ones(3, dtype=DT))
    prop = propagate(graph, {"x": x}, Rule("zero"), init="one", target=[0, 2, 1])
    assert prop.targets.tolist() == [0, 2, 1]
    assert [int(prop.output_relevance[s].argmax()) for s in range(3)] == [0, 2, 1]
    prop = propagate(graph, {"x": x}, Rule("zero"), init="one")  # the predicted class by default
    assert prop.targets.tolist() == z.argmax(dim=1).tolist()
    prop = propagate(graph, {"x": x}, Rule("zero"), init="one", target=torch.tensor([2, 2, 0]))
    assert prop.targets.tolist() == [2, 2, 0]


@pytest.mark.parametrize("target", [3, -1, [0, 1, 3], [0, 1], [0, 1, 2, 0], 100])
def test_bad_targets_are_input_errors(target):
    graph, x, _ = _single_linear()
    with pytest.raises(InputError):
        propagate(graph, {"x": x}, Rule("zero"), target=target)


# ---------------------------------------------------------------- trailing softmax


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_trailing_softmax_is_stripped_and_noted(op):
    graph = Graph(
        ["x"],
        ["probs"],
        [
            Node("fc", "linear", ["x"], ["logits"], {}, {"weight": _w(3, 4), "bias": _w(3)}),
            Node("out_softmax", op, ["logits"], ["probs"], {"axis": -1}),
        ],
    )
    x = _x(batch=2, n=4)
    if op == "log_softmax":
        with pytest.raises(UnsupportedOpError, match="out_softmax"):
            propagate(graph, {"x": x}, Rule("epsilon"))
    else:  # explaining the probability: the Taylor rule, its leak explained
        out = {r.node_id: r for r in propagate(graph, {"x": x}, Rule("epsilon")).records}["out_softmax"]
        assert float(out.residual.abs().max()) <= 1e-12 and float(out.absorbed_softmax.abs().max()) > 0
    stripped = strip_output_softmax(graph)
    assert stripped.outputs == ["logits"]
    assert [n.op for n in stripped.nodes] == ["linear"]
    assert len(stripped.notes) == 1 and "out_softmax" in stripped.notes[0] and op in stripped.notes[0]
    assert graph.outputs == ["probs"] and graph.notes == []  # the pass does not touch its input
    prop = propagate(stripped, {"x": x}, Rule("epsilon"), init="logit")
    assert prop.notes == stripped.notes
    logits = x @ graph.nodes[0].params["weight"].T + graph.nodes[0].params["bias"]
    assert torch.allclose(prop.r_output, logits.max(dim=1).values, rtol=0, atol=1e-15)


def test_a_softmax_that_feeds_another_node_is_not_stripped():
    graph = _mlp_with([Node("mid_softmax", "softmax", ["h"], ["p"], {"axis": -1})], "p")
    stripped = strip_output_softmax(graph)
    assert [n.id for n in stripped.nodes] == ["fc1", "mid_softmax", "fc2"]
    assert stripped.notes == []
