"""The transformer rules against dense formulas written independently (tests/helpers/dense_transformer.py).

Each rule's handler runs on a batch with a random mixed-sign output relevance (some entries exactly zero); per
sample, the relevance per input and every accounted share must equal the dense reference to 1e-10 of the
relevance's scale, and the engine's own leak must equal its shares (residual at rounding):

- ``norm_identity`` on LayerNorm (one and two normalized axes), RMSNorm, GroupNorm and InstanceNorm, with and
  without weight and bias, under every bias mode and two epsilons (a large one makes a misplaced stabilizer show);
- ``taylor`` on softmax rows with -inf, finfo.min and large negative masks, relevance on masked entries, opset<13
  coerce-to-2D, and a non-trailing axis;
- ``uniform`` and ``constant_factor`` on batched matmuls (Q K^T, A V), einsum, and broadcasting mul;
- routing with constant parts (concat with a class token, where with a constant operand, constant pad) and the
  additive mask (bias_neuron with -inf entries): the constants' share is the relevance on their positions.
"""

from __future__ import annotations

import pytest
import torch

from lrpaudit.ir import Node
from lrpaudit.ops import run_op
from lrpaudit.rules.dispatch import handler_for
from lrpaudit.rules.spec import Rule
from tests.helpers.dense_transformer import (
    dense_norm,
    dense_product,
    dense_softmax,
    product_forward,
    torch_norm,
)

DT = torch.float64
TOL = 1e-10


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _relevance(shape, seed):
    R = torch.randn(shape, generator=_gen(seed), dtype=DT)
    R[R.abs() < 0.3] = 0.0
    return R


def _per_sample(t):
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _shares(result, batch):
    zeros = torch.zeros(batch, dtype=DT)
    return {
        key: (zeros if getattr(result, key) is None else getattr(result, key))
        for key in ("absorbed_bias", "absorbed_stabilizer", "absorbed_softmax", "degenerate")
    }


def _check_identity(R, r_in, shares, label):
    """The engine's leak equals its shares, per sample."""
    leak = _per_sample(R) - sum(_per_sample(r) for r in r_in)
    residual = leak - sum(shares.values())
    scale = _per_sample(R.abs())
    assert float((residual.abs() / scale).max()) <= TOL, f"{label}: residual {residual}"


# ---------------------------------------------------------------- norms

NORM_CASES = {
    # name: (op, attrs, input shape with batch, weight/bias shape)
    "layernorm": ("layernorm", {"axes": (-1,), "eps": 1e-5, "center": True}, (3, 3, 5), (5,)),
    "layernorm_2axes": ("layernorm", {"axes": (-2, -1), "eps": 1e-3, "center": True}, (2, 3, 2, 3), (2, 3)),
    "rmsnorm": ("layernorm", {"axes": (-1,), "eps": 1e-6, "center": False}, (3, 4, 5), (5,)),
    "groupnorm": ("groupnorm", {"groups": 2, "eps": 1e-5}, (2, 4, 3, 2), (4,)),
    "instancenorm": ("groupnorm", {"groups": 3, "eps": 1e-5}, (2, 3, 5), (3,)),
}


@pytest.mark.parametrize("epsilon", [1e-6, 0.3])
@pytest.mark.parametrize("bias_mode", ["absorb", "ignore", "distribute"])
@pytest.mark.parametrize("affine", ["weight_bias", "bias_only", "none"])
@pytest.mark.parametrize("case", list(NORM_CASES))
def test_norm_identity_matches_dense(case, affine, bias_mode, epsilon):
    op, attrs, shape, param_shape = NORM_CASES[case]
    gen = _gen(hash((case, affine)) % 1000)
    x = torch.randn(shape, generator=gen, dtype=DT) * 2 + 0.5
    weight = torch.randn(param_shape, generator=gen, dtype=DT) if affine == "weight_bias" else None
    bias = torch.randn(param_shape, generator=gen, dtype=DT) if affine != "none" else None
    params = {k: v for k, v in (("weight", weight), ("bias", bias)) if v is not None}
    kw = {
        "op": op,
        "axes": attrs.get("axes"),
        "groups": attrs.get("groups"),
        "eps_norm": attrs["eps"],
        "center": attrs.get("center", True),
        "weight": weight,
        "bias": bias,
    }
    z = torch_norm(x, **{k: v for k, v in kw.items()})
    node = Node("n", op, ["x"], ["y"], attrs, params)
    assert torch.allclose(run_op(op, [x], attrs, params), z, rtol=0, atol=1e-12)
    R = _relevance(z.shape, 7)
    rule = Rule("norm_identity", bias=bias_mode, epsilon=epsilon)
    result = handler_for(rule)(node, [x], z, R, rule, params)
    shares = _shares(result, x.shape[0])
    for s in range(x.shape[0]):
        ref = dense_norm(x[s], z[s], R[s], epsilon=epsilon, bias_mode=bias_mode, **kw)
        scale = max(float(R[s].abs().sum()), ref.magnitude)
        dev = float((result.r_in[0][s].reshape(-1) - ref.r_in).abs().max()) / scale
        assert dev <= TOL, f"{case}/{affine}/{bias_mode}/{epsilon} sample {s}: deviation {dev:.2e}"
        for key, want in (
            ("absorbed_bias", ref.absorbed_bias),
            ("absorbed_stabilizer", ref.absorbed_stabilizer),
            ("degenerate", ref.degenerate),
        ):
            assert abs(float(shares[key][s]) - want) <= TOL * scale, (case, key, float(shares[key][s]), want)
    _check_identity(R, result.r_in, shares, case)
    if bias_mode != "absorb" or bias is None:  # conserves up to the stabilizer
        assert float(shares["absorbed_bias"].abs().max()) == 0.0


def test_rmsnorm_without_beta_passes_relevance_unchanged_up_to_epsilon():
    """RMSNorm's map is diagonal: R_x = R * y / (y + eps sign y), the identity rule of AttnLRP Prop. 3.4."""
    x = torch.randn(2, 3, 4, generator=_gen(3), dtype=DT)
    weight = torch.randn(4, generator=_gen(4), dtype=DT)
    attrs = {"axes": (-1,), "eps": 1e-6, "center": False}
    z = run_op("layernorm", [x], attrs, {"weight": weight})
    R = _relevance(z.shape, 5)
    rule = Rule("norm_identity", epsilon=0.0)
    result = handler_for(rule)(
        Node("n", "layernorm", ["x"], ["y"], attrs), [x], z, R, rule, {"weight": weight}
    )
    assert torch.allclose(result.r_in[0], R, rtol=0, atol=1e-14)


# ---------------------------------------------------------------- softmax


def _masked_logits(seed):
    gen = _gen(seed)
    x = torch.randn(2, 3, 5, generator=gen, dtype=DT) * 3
    x[0, 0, 1] = float("-inf")  # a -inf mask
    x[0, 1, :2] = torch.finfo(torch.float32).min  # a finfo.min mask, as exporters write it
    x[1, 2, 4] = torch.finfo(DT).min
    x[1, 0, 0] = -1e4  # an old-style additive mask: s underflows to 0
    x[1, 1, 3] = -20.0  # tiny but non-zero probability: not masked
    return x


@pytest.mark.parametrize(
    "case",
    ["trailing", "masked_relevance_on_masked", "middle_axis", "coerce_2d"],
)
def test_taylor_softmax_matches_dense(case):
    x = _masked_logits(11)
    attrs = {"axis": -1}
    if case == "middle_axis":
        x = torch.randn(2, 4, 3, generator=_gen(2), dtype=DT) * 2
        attrs = {"axis": 1}
    if case == "coerce_2d":
        x = torch.randn(2, 3, 2, 2, generator=_gen(3), dtype=DT) * 2
        x[0, 1, 0, 1] = float("-inf")
        attrs = {"axis": 2, "coerce_2d": True}
    z = run_op("softmax", [x], attrs, {})
    R = _relevance(z.shape, 13)
    if case != "masked_relevance_on_masked":
        R = torch.where(z == 0, 0.0, R)  # upstream rules give nothing to a zero probability
    else:
        assert bool((R[z == 0] != 0).any())
    rule = Rule("taylor")
    result = handler_for(rule)(Node("s", "softmax", ["x"], ["y"], attrs), [x], z, R, rule, {})
    r_x = result.r_in[0]
    assert bool(torch.isfinite(r_x).all()) and bool(torch.isfinite(result.absorbed_softmax).all())
    assert float(torch.where(z == 0, r_x, 0.0).abs().max()) == 0.0  # masked logits get nothing
    for s in range(x.shape[0]):
        ref = dense_softmax(x[s], R[s], attrs["axis"], attrs.get("coerce_2d", False))
        scale = float(R[s].abs().sum()) * max(1.0, float(torch.where(z[s] > 0, x[s], 0.0).abs().max()))
        assert float((r_x[s] - ref.r_in).abs().max()) <= TOL * scale, case
        assert abs(float(result.absorbed_softmax[s]) - ref.taylor_bias) <= TOL * scale, case
    _check_identity(R, result.r_in, _shares(result, x.shape[0]), case)


def test_taylor_softmax_leak_is_the_taylor_bias_by_hand():
    """One row x = (0, ln 3): s = (1/4, 3/4); R = (1, 0): R_x = x (R - s sum R) = (0, -3/4 ln 3)."""
    x = torch.tensor([[0.0, float(torch.log(torch.tensor(3.0, dtype=DT)))]], dtype=DT)
    z = torch.softmax(x, dim=-1)
    R = torch.tensor([[1.0, 0.0]], dtype=DT)
    rule = Rule("taylor")
    result = handler_for(rule)(Node("s", "softmax", ["x"], ["y"], {"axis": -1}), [x], z, R, rule, {})
    ln3 = float(x[0, 1])
    assert torch.allclose(result.r_in[0], torch.tensor([[0.0, -0.75 * ln3]], dtype=DT), atol=1e-15)
    # Taylor bias share: R_0 (1 - x_0 + s.x) = 1 + 0.75 ln 3 = sum R - sum R_x
    assert abs(float(result.absorbed_softmax[0]) - (1 + 0.75 * ln3)) <= 1e-15


# ---------------------------------------------------------------- products of activations

PRODUCT_CASES = {
    # name: (op, attrs, factor shapes with batch)
    "qk": ("matmul", {}, [(2, 2, 3, 4), (2, 2, 4, 3)]),
    "av": ("matmul", {}, [(2, 2, 3, 3), (2, 2, 3, 4)]),
    "matmul_broadcast": ("matmul", {}, [(2, 3, 4), (2, 4, 2)]),
    "einsum": ("einsum", {"equation": "bhqd,bhkd->bhqk"}, [(2, 2, 3, 4), (2, 2, 5, 4)]),
    "mul": ("mul", {}, [(2, 3, 4), (2, 3, 4)]),
    "mul_broadcast": ("mul", {}, [(2, 3, 4), (2, 3, 1)]),
}


@pytest.mark.parametrize("epsilon", [1e-6, 0.5])
@pytest.mark.parametrize("rule_name", ["uniform", "constant_factor_0", "constant_factor_1"])
@pytest.mark.parametrize("case", list(PRODUCT_CASES))
def test_product_rules_match_dense(case, rule_name, epsilon):
    op, attrs, shapes = PRODUCT_CASES[case]
    gen = _gen(len(case) * 31 + 7)
    factors = [torch.randn(shape, generator=gen, dtype=DT) for shape in shapes]
    if case == "av":
        factors[0] = torch.softmax(factors[0], dim=-1)
    z = product_forward(op, attrs, factors)
    node = Node("p", op, ["a", "b"], ["y"], attrs)
    assert torch.allclose(run_op(op, factors, attrs, {}), z, rtol=0, atol=1e-13)
    R = _relevance(z.shape, 17)
    constant = None if rule_name == "uniform" else int(rule_name[-1])
    rule = (
        Rule("uniform", epsilon=epsilon)
        if constant is None
        else Rule("constant_factor", epsilon=epsilon, factor=constant)
    )
    result = handler_for(rule)(node, factors, z, R, rule, {})
    shares = _shares(result, z.shape[0])
    for s in range(z.shape[0]):
        sample = [f[s : s + 1] for f in factors]
        refs = dense_product(
            op, attrs, sample, z[s : s + 1], R[s : s + 1], epsilon=epsilon, constant=constant
        )
        scale = max(float(R[s].abs().sum()), sum(ref.magnitude for ref in refs))
        for k, ref in enumerate(refs):
            dev = float((result.r_in[k][s].reshape(-1) - ref.r_in).abs().max()) / scale
            assert dev <= TOL, f"{case}/{rule_name}/{epsilon} factor {k}: deviation {dev:.2e}"
        stab = sum(ref.absorbed_stabilizer for ref in refs)
        degenerate = sum(ref.degenerate for ref in refs)
        if constant is not None:  # the dense reference of the carrying factor alone
            stab, degenerate = refs[1 - constant].absorbed_stabilizer, refs[1 - constant].degenerate
        assert abs(float(shares["absorbed_stabilizer"][s]) - stab) <= TOL * scale
        assert abs(float(shares["degenerate"][s]) - degenerate) <= TOL * scale
    _check_identity(R, result.r_in, shares, case)
    if constant is not None:
        assert float(result.r_in[constant].abs().max()) == 0.0


def test_uniform_gives_each_factor_of_a_product_half():
    """o = a * b elementwise: both factors get R o / (o + eps sign o) / 2, whatever their sizes."""
    a = torch.tensor([[2.0, -1.0, 0.5]], dtype=DT)
    b = torch.tensor([[3.0, 4.0, -8.0]], dtype=DT)
    z = a * b
    R = torch.tensor([[1.0, -2.0, 0.5]], dtype=DT)
    rule = Rule("uniform", epsilon=0.0)
    result = handler_for(rule)(Node("p", "mul", ["a", "b"], ["y"]), [a, b], z, R, rule, {})
    assert torch.equal(result.r_in[0], R / 2) and torch.equal(result.r_in[1], R / 2)


# ---------------------------------------------------------------- routing with constants, additive masks


def _route(node, inputs, params, R):
    rule = Rule("route")
    z = run_op(node.op, inputs, node.attrs, params)
    return z, handler_for(rule)(node, inputs, z, R, rule, params)


def test_concat_with_a_class_token_keeps_the_tokens_share():
    x = torch.randn(2, 3, 4, generator=_gen(1), dtype=DT)
    cls, reg = torch.randn(2, 1, 4, dtype=DT), torch.randn(2, 2, 4, dtype=DT)
    params = {"cls": cls, "reg": reg}
    node = Node("cat", "concat", ["x"], ["y"], {"axis": 1, "constants": ((0, "cls"), (2, "reg"))}, params)
    R = _relevance((2, 6, 4), 3)
    z, result = _route(node, [x], params, R)
    assert torch.equal(z, torch.cat([cls, x, reg], dim=1))
    assert torch.equal(result.r_in[0], R[:, 1:4])
    assert torch.allclose(result.absorbed_bias, _per_sample(R[:, :1]) + _per_sample(R[:, 4:]), atol=1e-15)
    _check_identity(R, result.r_in, _shares(result, 2), "concat")


@pytest.mark.parametrize("input_when", [True, False])
def test_where_with_a_constant_operand_keeps_the_constants_share(input_when):
    x = torch.randn(2, 3, 3, generator=_gen(2), dtype=DT)
    cond = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    other = torch.full((), torch.finfo(torch.float32).min, dtype=DT)
    params = {"cond": cond, "other": other}
    node = Node("mask", "where", ["x"], ["y"], {"input_when": input_when}, params)
    R = _relevance((2, 3, 3), 4)
    z, result = _route(node, [x], params, R)
    from_x = cond if input_when else ~cond
    assert torch.equal(result.r_in[0], torch.where(from_x, R, 0.0))
    assert torch.allclose(result.absorbed_bias, _per_sample(torch.where(from_x, 0.0, R)), atol=1e-15)
    two = Node("pick", "where", ["x", "w"], ["y"], {}, {"cond": cond})
    w = torch.randn(2, 3, 3, dtype=DT)
    _, both = _route(two, [x, w], {"cond": cond}, R)
    assert both.absorbed_bias is None
    assert torch.equal(both.r_in[0] + both.r_in[1], R)


def test_expand_gather_and_slice_route_exactly():
    x = torch.randn(2, 1, 4, generator=_gen(5), dtype=DT)
    expand = Node("e", "expand", ["x"], ["y"], {"shape": (2, 3, 4)})
    R = _relevance((2, 3, 4), 6)
    _, result = _route(expand, [x], {}, R)
    assert torch.allclose(result.r_in[0], R.sum(dim=1, keepdim=True), atol=1e-15)
    tokens = torch.randn(2, 5, 3, dtype=DT)
    gather = Node("g", "gather", ["t"], ["y"], {"axis": 1, "indices": [0, 0, 3]})
    R = _relevance((2, 3, 3), 7)
    _, result = _route(gather, [tokens], {}, R)
    want = torch.zeros_like(tokens)
    want[:, 0] = R[:, 0] + R[:, 1]
    want[:, 3] = R[:, 2]
    assert torch.allclose(result.r_in[0], want, atol=1e-15) and result.absorbed_bias is None


def test_an_additive_minus_inf_mask_stays_finite_under_every_bias_mode():
    """x + mask with -inf / finfo.min entries, relevance 0 where masked (what the softmax rule sends there)."""
    x = torch.randn(2, 3, 3, generator=_gen(8), dtype=DT)
    mask = torch.zeros(3, 3, dtype=DT)
    mask[0, 2] = float("-inf")
    mask[1, 2] = torch.finfo(DT).min
    z = x + mask
    R = torch.where(torch.isfinite(z) & (mask == 0), _relevance((2, 3, 3), 9), 0.0)
    for mode in ("absorb", "ignore", "distribute"):
        rule = Rule("bias_neuron", bias=mode, stabilizer=1e-6)
        node = Node("m", "add_const", ["x"], ["y"], {}, {"const": mask})
        result = handler_for(rule)(node, [x], z, R, rule, {"const": mask})
        shares = _shares(result, 2)
        assert bool(torch.isfinite(result.r_in[0]).all()), mode
        assert all(bool(torch.isfinite(v).all()) for v in shares.values()), mode
        _check_identity(R, result.r_in, shares, mode)


@pytest.mark.parametrize("mode", ["absorb", "ignore"])
def test_a_bias_neuron_of_zero_passes_relevance_unchanged(mode):
    """x + c where c is 0 at some positions (a mask's kept entries): R passes there exactly, with no stabilizer;
    elsewhere the epsilon rule with c as a bias neuron. Dense reference written here."""
    eps = 0.3  # large, so that a stabilizer where c = 0 would show
    x = torch.randn(2, 3, 4, generator=_gen(10), dtype=DT)
    const = torch.randn(3, 4, generator=_gen(11), dtype=DT)
    const[torch.rand(3, 4, generator=_gen(12)) < 0.5] = 0.0
    z = x + const
    R = _relevance((2, 3, 4), 13)
    pre = z if mode == "absorb" else x + 0 * const
    denom = pre + eps * torch.where(pre >= 0, 1.0, -1.0).to(DT)
    kept = const == 0
    want = torch.where(kept, R, (x if mode == "absorb" else pre) * R / denom)
    rule = Rule("bias_neuron", bias=mode, stabilizer=eps)
    node = Node("m", "add_const", ["x"], ["y"], {}, {"const": const})
    result = handler_for(rule)(node, [x], z, R, rule, {"const": const})
    assert float((result.r_in[0] - want).abs().max()) <= TOL
    shares = _shares(result, 2)
    stab = _per_sample(torch.where(kept, 0.0, R * (denom - pre) / denom))
    assert torch.allclose(shares["absorbed_stabilizer"], stab, atol=TOL)
    if mode == "absorb":
        assert torch.allclose(shares["absorbed_bias"], _per_sample(R * const / denom), atol=TOL)
    _check_identity(R, result.r_in, shares, mode)
