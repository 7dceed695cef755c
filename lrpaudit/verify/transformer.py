"""Self-verification of the transformer rules: each node recomputed with dense matrices (``--verify-rules``).

As for linear-type nodes (``verify/__init__.py``), nothing here shares code with the rules it checks
(``rules/attention.py``); every matrix comes from a Jacobian of the op at the sample:

- ``norm_identity``: ``W`` is the Jacobian of ``x -> g C(x) / sigma`` with sigma frozen at its value on the sample
  (``C`` the centring, found as the Jacobian of ``x - mean(x)`` over the group), ``b = f(a) - W a`` is beta; the
  dense epsilon rule of ``verify.dense_rule`` runs on them;
- ``uniform`` / ``constant_factor``: ``W_k`` is the Jacobian of the product with respect to factor ``k`` (the
  others fixed); the product is linear in it, so the epsilon rule on ``W_k`` with no bias is the rule's share;
- ``taylor``: ``J`` is the softmax's Jacobian, and ``R_i = sum_j a_i J_ji / s_j R_j`` with the Taylor root at the
  logits (masked logits, ``s = 0``, taken as absent).
"""

from __future__ import annotations

import torch

from ..ir import Node
from ..ops import run_op
from ..rules.dispatch import handler_for
from ..rules.spec import Rule
from .dense import RuleCheck, dense_rule, jacobian_rows

Tensor = torch.Tensor
CHECKED_RULES = ("norm_identity", "uniform", "constant_factor", "taylor")


def _top_units(r: Tensor, max_units: int) -> tuple[Tensor, Tensor]:
    """The output units carrying the most relevance (at most ``max_units``), and R with every other unit zeroed."""
    flat = r.reshape(-1)
    units = torch.argsort(flat.abs(), descending=True)[: min(max_units, flat.numel())]
    units = units[flat[units] != 0]
    masked = torch.zeros_like(flat)
    masked[units] = flat[units]
    return units, masked.reshape(r.shape)


def _frozen_norm(node: Node, params: dict, a: Tensor):
    """The norm's linear part ``x -> g C(x) / sigma`` with sigma frozen at ``a`` (batch dim 1)."""
    if node.op == "groupnorm":
        groups = node.attrs["groups"]

        def center(x: Tensor) -> Tensor:
            g = x.reshape(x.shape[0], groups, -1)
            return (g - g.mean(dim=2, keepdim=True)).reshape(x.shape)

        sigma = center(a).reshape(1, groups, -1).pow(2).mean(dim=2, keepdim=True)
        sigma = (sigma + node.attrs["eps"]).sqrt().expand(1, groups, a[0].numel() // groups).reshape(a.shape)
        shape = (1, -1) + (1,) * (a.dim() - 2)
        weight = params.get("weight")
        weight = None if weight is None else weight.reshape(shape)
    else:
        axes = tuple(node.attrs["axes"])
        centred = node.attrs.get("center", True)

        def center(x: Tensor) -> Tensor:
            return x - x.mean(dim=axes, keepdim=True) if centred else x

        sigma = (center(a).pow(2).mean(dim=axes, keepdim=True) + node.attrs["eps"]).sqrt()
        weight = params.get("weight")

    def linear(x: Tensor) -> Tensor:
        y = center(x) / sigma
        return y * weight if weight is not None else y

    return linear, center


def _norm_dense(node, rule, params, inputs, z, r, units) -> Tensor:
    (a,) = inputs
    linear, center = _frozen_norm(node, params, a)
    W = jacobian_rows(linear, a, units)
    conn = (jacobian_rows(center, a, units) != 0).to(W.dtype)
    b = z.reshape(-1)[units] - W @ a.reshape(-1)
    as_epsilon = Rule("epsilon", bias=rule.bias, epsilon=float(rule.get("epsilon")))
    return dense_rule(as_epsilon, W, b, conn, a.reshape(-1), z.reshape(-1)[units], r.reshape(-1)[units])


def _product_dense(node, rule, params, inputs, z, r, units) -> list[Tensor]:
    n = len(inputs)
    constant = int(rule.get("factor")) if rule.name == "constant_factor" else None
    as_epsilon = Rule("epsilon", epsilon=float(rule.get("epsilon")))
    shares = r.reshape(-1)[units] / (n if constant is None else 1)
    out = []
    for k, x in enumerate(inputs):
        if k == constant:
            out.append(torch.zeros_like(x).reshape(-1))
            continue

        def as_fn(v: Tensor, k=k) -> Tensor:
            factors = list(inputs)
            factors[k] = v
            return run_op(node.op, factors, node.attrs, params)

        W = jacobian_rows(as_fn, x, units)
        zero_b = torch.zeros(len(units), dtype=W.dtype)
        out.append(
            dense_rule(
                as_epsilon, W, zero_b, (W != 0).to(W.dtype), x.reshape(-1), z.reshape(-1)[units], shares
            )
        )
    return out


def _taylor_dense(node, rule, params, inputs, z, r, units) -> Tensor:
    (a,) = inputs
    J = jacobian_rows(lambda x: run_op("softmax", [x], node.attrs, params), a, units)  # J[u, i] = ds_u / da_i
    s = z.reshape(-1)[units]
    flat_a = a.reshape(-1)
    present = z.reshape(-1) != 0
    logits = torch.where(present, flat_a, torch.zeros_like(flat_a))
    ratio = torch.where((s > 0)[:, None], J / torch.where(s > 0, s, 1.0)[:, None], 0.0)
    result = (logits[None, :] * ratio * r.reshape(-1)[units][:, None]).sum(dim=0)
    return torch.where(present, result, torch.zeros_like(result))


def verify_transformer_node(
    node: Node, rule: Rule, params: dict, inputs: list[Tensor], z: Tensor, r: Tensor, max_units: int
) -> RuleCheck | None:
    """Compare the engine's result for one sample (batch dim 1) with the dense formula; None if not checked."""
    if rule.name not in CHECKED_RULES or (rule.name == "constant_factor" and int(rule.get("factor")) < 0):
        return None
    units, masked = _top_units(r, max_units)
    if rule.name == "taylor":
        units = units[z.reshape(-1)[units] > 0]  # masked outputs carry nothing the Taylor expansion can see
        keep = torch.zeros_like(masked.reshape(-1))
        keep[units] = masked.reshape(-1)[units]
        masked = keep.reshape(r.shape)
    engine = handler_for(rule)(node, inputs, z, masked, rule, params).r_in
    if rule.name == "norm_identity":
        dense = [_norm_dense(node, rule, params, inputs, z, masked, units)]
    elif rule.name == "taylor":
        dense = [_taylor_dense(node, rule, params, inputs, z, masked, units)]
    else:
        dense = _product_dense(node, rule, params, inputs, z, masked, units)
    dev = 0.0
    for got, want in zip(engine, dense):
        if want.numel():
            dev = max(dev, float((got.reshape(-1) - want).abs().max()))
    scale = float(masked.abs().sum())
    if rule.name == "taylor":  # R_x = x (...): deviations scale with the logits too
        scale *= max(1.0, float(torch.where(z > 0, inputs[0], 0.0).abs().max()))
    return RuleCheck(node.id, rule.describe(), dev, scale, len(units), r.numel())
