"""Transformer blocks built as IR (tests/helpers/transformer_ir.py): the rules composed, in float64.

- The gradient trick: with every stabilizer at 0, the AttnLRP rules (and CP-LRP's) equal ``x * grad`` of the
  network with LXT's efficient-mode gradient modifications, written independently in torch, with and without
  biases, as long as the rules put each bias and constant where the forward has it (``bias: absorb``); with
  ``bias: ignore`` they do not.
- The accounting identity on every layer of ViT-, GPT-, BERT- and LLaMA-like blocks under every preset: the residual stays at rounding (1e-9 of the layer's relevance scale),
  so the bias, stabilizer, softmax (Taylor) and degenerate shares sum to each layer's leak.
- CP-LRP on bias-free blocks conserves: exactly with zero stabilizers, up to the stabilizer share with the
  preset's; AttnLRP on the same blocks leaks through the softmax, and the audit names that share.
- Property (hypothesis): random small blocks of every kind with a random rule per node (linear-type rules, bias
  modes, stabilizers from 0 to 0.1, uniform or CP-LRP products): the residual stays at rounding in float64 and
  below 1e-4 in float32.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrpaudit.config import list_presets, load_config
from lrpaudit.forward import run_forward
from lrpaudit.ir import PRODUCTS
from lrpaudit.propagate import propagate
from lrpaudit.rules.spec import Rule
from tests.helpers.numeric import rel_diff
from tests.helpers.transformer_ir import reference_forward, transformer

DT = torch.float64
KINDS = ("vit", "gpt", "bert", "llama")
PRESETS = [name for name, _ in list_presets()]


def lrp0_rules(cp: bool = False, linear_bias: str = "absorb"):
    """The rules of the presets with every stabilizer at 0 (their gradient-trick form)."""

    def choose(node):
        if node.op == "linear":
            return Rule("zero", bias=linear_bias)
        if node.op in PRODUCTS:
            return Rule("constant_factor", epsilon=0.0) if cp else Rule("uniform", epsilon=0.0)
        if node.op == "layernorm":
            return Rule("norm_identity", epsilon=0.0)
        if node.op in ("add", "mean"):
            return Rule("norm", stabilizer=0.0)
        if node.op == "add_const":
            return Rule("bias_neuron", stabilizer=0.0)
        return None

    return choose


def _gradient_x_input(model, x, cp):
    x = x.clone().requires_grad_(True)
    out = reference_forward(model, x, lrp=True, cp=cp)
    target = out.detach().argmax(dim=1)
    picked = out[torch.arange(out.shape[0]), target].sum()
    (grad,) = torch.autograd.grad(picked, x)
    return (x * grad).detach(), target


@pytest.mark.parametrize("cp", [False, True], ids=["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "bias-free"])
@pytest.mark.parametrize("kind", KINDS)
def test_rules_equal_gradient_times_input_of_the_modified_forward(kind, bias, cp):
    model = transformer(kind, bias=bias, seed=3)
    x = model.example(1)
    values = run_forward(model.graph, {"tokens": x})
    plain = reference_forward(model, x)
    assert rel_diff(values[model.graph.outputs[0]], plain) <= 1e-12  # the IR is the torch twin
    expected, target = _gradient_x_input(model, x, cp)
    prop = propagate(model.graph, {"tokens": x}, lrp0_rules(cp), init="logit", target=target.tolist())
    assert rel_diff(prop.input_relevance["tokens"], expected) <= 1e-10


@pytest.mark.parametrize("kind", ["vit", "gpt"])
def test_the_equivalence_needs_the_bias_where_the_forward_has_it(kind):
    """With bias: ignore the rules divide by the bias-free pre-activation, which the forward never computed."""
    model = transformer(kind, bias=True, seed=3)
    x = model.example(1)
    expected, target = _gradient_x_input(model, x, cp=False)
    rules = lrp0_rules(linear_bias="ignore")
    prop = propagate(model.graph, {"tokens": x}, rules, init="logit", target=target.tolist())
    assert rel_diff(prop.input_relevance["tokens"], expected) > 1e-3


def _unexplained(prop) -> list[str]:
    """Layers whose residual is above 1e-9 of their relevance scale."""
    bad = []
    for record in prop.records:
        rel = (record.residual.abs() / torch.where(record.scale > 0, record.scale, 1.0)).max()
        if float(rel) > 1e-9 or not bool(torch.isfinite(record.residual).all()):
            bad.append(f"{record.node_id} ({record.rule}): {float(rel):.2e}")
    return bad


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_layer_residual_is_rounding(kind, preset):
    """Every preset has a rule for every transformer op, and every one of them explains each layer's leak."""
    model = transformer(kind, blocks=2, seed=5)
    x = model.example(2)
    prop = propagate(model.graph, {"tokens": x}, load_config(preset=preset))
    assert _unexplained(prop) == []
    records = {r.node_id: r for r in prop.records}
    softmax = [r for r in prop.records if r.op == "softmax"]
    if preset in (
        "cp-lrp",
        "conservative",
    ):  # the attention weights are constant: nothing reaches the softmax
        assert all(float(r.r_received.abs().max()) == 0.0 for r in softmax)
    else:
        assert all(float(r.absorbed_softmax.abs().min()) > 0 for r in softmax)
        assert records["blocks.0.attn.softmax"].rule == "taylor"
    # end to end: the leak is the sum of the accounted shares, up to rounding
    explained = sum(prop.total(key) for key in ("absorbed_bias", "absorbed_stabilizer", "absorbed_softmax"))
    explained = explained + prop.total("degenerate")
    assert float(((prop.leak - explained).abs() / prop.output_scale).max()) <= 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_cp_lrp_on_a_bias_free_transformer_conserves(kind):
    model = transformer(kind, blocks=2, bias=False, seed=7)
    x = model.example(3)
    exact = propagate(model.graph, {"tokens": x}, lrp0_rules(cp=True))
    assert float((exact.leak.abs() / exact.output_scale).max()) <= 1e-12
    preset = propagate(model.graph, {"tokens": x}, load_config(preset="cp-lrp"))
    for record in preset.records:
        assert float(record.absorbed_bias.abs().max()) == 0.0, record.node_id
        assert float(record.absorbed_softmax.abs().max()) == 0.0, record.node_id
    stabilizers = preset.total("absorbed_stabilizer") + preset.total("degenerate")
    assert float(((preset.leak - stabilizers).abs() / preset.output_scale).max()) <= 1e-12
    assert float((preset.leak.abs() / preset.output_scale).max()) <= 1e-4
    # AttnLRP on the same bias-free network: the softmax's Taylor bias leaks, and it is accounted for
    attn = propagate(model.graph, {"tokens": x}, load_config(preset="attnlrp"))
    softmax_share = attn.total("absorbed_softmax")
    assert float((softmax_share.abs() / attn.output_scale).min()) > 1e-3
    explained = softmax_share + attn.total("absorbed_stabilizer") + attn.total("degenerate")
    assert float(((attn.leak - explained).abs() / attn.output_scale).max()) <= 1e-9


# ---------------------------------------------------------------- property: random blocks, random rules

LINEAR_CHOICES = [
    ("epsilon", {}),
    ("zero", {}),
    ("zplus", {}),
    ("gamma", {}),
    ("alphabeta", {}),
    ("flat", {}),
]


@st.composite
def transformer_cases(draw):
    kind = draw(st.sampled_from(KINDS))
    heads = draw(st.sampled_from([1, 2]))
    model = transformer(
        kind,
        batch=draw(st.integers(1, 2)),
        tokens=draw(st.integers(2, 4)),
        dim=draw(st.sampled_from([4, 6])),  # a LayerNorm of 2 values is degenerate (its outputs are +-1)
        heads=heads,
        hidden=draw(st.integers(3, 6)),
        blocks=draw(st.integers(1, 2)),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 100)),
    )
    cp = draw(st.booleans())
    product_eps = draw(st.sampled_from([0.0, 1e-6, 0.1]))
    rules = {}
    for node in model.graph.nodes:
        bias = draw(st.sampled_from(["absorb", "ignore", "distribute"]))
        if node.op == "linear":
            name, params = draw(st.sampled_from(LINEAR_CHOICES))
            rules[node.id] = Rule(name, bias=bias, **params)
        elif node.op == "layernorm":
            rules[node.id] = Rule("norm_identity", bias=bias, epsilon=draw(st.sampled_from([0.0, 1e-6, 0.1])))
        elif node.op in PRODUCTS:
            rules[node.id] = Rule("constant_factor" if cp else "uniform", epsilon=product_eps)
    return model, rules, draw(st.sampled_from(["logit", "one"]))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=transformer_cases())
def test_random_transformers_under_random_rules_explain_every_leak(case):
    model, rules, init = case
    x = model.example(4)
    prop = propagate(model.graph, {"tokens": x}, rules, init=init)
    assert _unexplained(prop) == []
    p32 = propagate(model.graph, {"tokens": x}, rules, init=init, dtype=torch.float32)
    bad = [
        (r.node_id, r.rule, float(r.rel_residual.max())) for r in p32.records if r.rel_residual.max() > 1e-4
    ]
    assert bad == []
