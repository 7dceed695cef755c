"""Linear-type rules as sets of branches (DESIGN section 5), evaluated with the gradient trick and accounted.

Branch k has contribution terms ``(input_t, W_t)`` with ``Z^k_ij = sum_t input_t,i W_t,ij``, a bias ``B^k_j``, a
stabilizer ``E^k_j = eps sign(Z^k_j + B^k_j)`` (sign(0)=+1), a coefficient ``c_k`` and an output mask. It passes
``R^k_i = c_k sum_t input_t,i (W_t^T (mask R / D^k))_i`` with ``D^k = Z^k + B^k + E^k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .linear_view import LinearView
from .spec import Rule

Tensor = torch.Tensor


@dataclass
class Term:
    input: Tensor
    weight: Tensor | None  # None: the pool's own (non-negative) weights


@dataclass
class Branch:
    terms: list[Term]
    bias: Tensor | None
    stabilizer: float
    coeff: float = 1.0
    mask: Tensor | None = None
    pre: Tensor | None = None  # Z + B when already known (the cached forward output)


@dataclass
class LinearResult:
    """Relevance passed to the input plus the per-sample shares of the leak."""

    r_in: Tensor
    absorbed_bias: Tensor
    absorbed_stabilizer: Tensor
    degenerate: Tensor


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _bounds(value, like: Tensor) -> Tensor:
    """zbox bounds as a tensor broadcast to the input (scalar, or per-input without the batch dim)."""
    bound = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if bound.dim() == like.dim() - 1:
        bound = bound.unsqueeze(0)
    try:
        return bound.expand_as(like)
    except RuntimeError as exc:
        raise ConfigError(
            f"zbox bounds of shape {list(bound.shape)} do not fit the node input of shape {list(like.shape[1:])}"
        ) from exc


def build_branches(rule: Rule, view: LinearView, a: Tensor, z: Tensor) -> list[Branch]:
    """The branches of ``rule`` on this node, with biases as in ``absorb`` mode (bias modes are applied later)."""
    w, b = view.weight, view.bias
    name = rule.name
    if name in ("zero", "epsilon", "norm"):
        eps = float(rule.get("epsilon" if name == "epsilon" else "stabilizer"))
        return [Branch([Term(a, w)], b, eps, pre=z if rule.bias != "ignore" else None)]
    stab = float(rule.get("stabilizer"))
    ones = torch.ones_like(a)
    if name == "wsquare":
        return [Branch([Term(ones, w * w)], None if b is None else b * b, stab)]
    if name == "flat":
        return [Branch([Term(ones, view.ones_weight())], None, stab)]
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    if name in ("alphabeta", "zplus"):
        alpha = 1.0 if name == "zplus" else float(rule.get("alpha"))
        beta = 0.0 if name == "zplus" else float(rule.get("beta"))
        branches = [Branch([Term(a_pos, _pos(w)), Term(a_neg, _neg(w))], _pos(b), stab, alpha)]
        if beta != 0.0:
            branches.append(Branch([Term(a_pos, _neg(w)), Term(a_neg, _pos(w))], _neg(b), stab, -beta))
        return branches
    if name == "gamma":
        gamma = float(rule.get("gamma"))
        w_up, w_down = w + gamma * w.clamp(min=0), w + gamma * w.clamp(max=0)
        b_up = None if b is None else b + gamma * b.clamp(min=0)
        b_down = None if b is None else b + gamma * b.clamp(max=0)
        return [
            Branch([Term(a_pos, w_up), Term(a_neg, w_down)], b_up, stab, 1.0, (z > 0).to(z.dtype)),
            Branch([Term(a_pos, w_down), Term(a_neg, w_up)], b_down, stab, 1.0, (z < 0).to(z.dtype)),
        ]
    if name == "zbox":
        low, high = _bounds(rule.get("low"), a), _bounds(rule.get("high"), a)
        return [Branch([Term(a, w), Term(-low, _pos(w)), Term(-high, _neg(w))], None, stab)]
    raise ValueError(f"rule {name!r} is not a linear-type rule")


def _active(term: Term, view: LinearView) -> bool:
    """Terms that contribute exactly nothing are skipped (e.g. the a- terms after a ReLU, W- of a pool)."""
    if term.weight is None and view.is_pool:
        return bool(torch.any(term.input != 0))
    if term.weight is None:
        return False
    return bool(torch.any(term.input != 0)) and bool(torch.any(term.weight != 0))


def per_sample(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


def apply_linear_rule(rule: Rule, view: LinearView, a: Tensor, z: Tensor, r_out: Tensor) -> LinearResult:
    """Run the rule on one node for a batch: relevance to the input and the leak's bias/stabilizer/degenerate shares."""
    zeros = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
    absorbed_bias, absorbed_stab, degenerate = zeros.clone(), zeros.clone(), zeros.clone()
    r_in = torch.zeros_like(a)
    covered = torch.zeros_like(r_out)
    for branch in build_branches(rule, view, a, z):
        terms = [t for t in branch.terms if _active(t, view)]
        bias = None if rule.bias == "ignore" else branch.bias
        if branch.pre is not None:
            pre = branch.pre
        else:
            pre = torch.zeros_like(r_out)
            for term in terms:
                pre = pre + view.apply(term.input, term.weight)
            if bias is not None:
                pre = pre + bias
        stab = (
            branch.stabilizer * torch.where(pre >= 0, 1.0, -1.0).to(pre.dtype) if branch.stabilizer else None
        )
        denom = pre + stab if stab is not None else pre
        mask = branch.mask if branch.mask is not None else 1.0
        r_branch = branch.coeff * mask * r_out
        covered = covered + branch.coeff * mask
        nonzero = denom != 0
        grad = torch.where(nonzero, r_branch / torch.where(nonzero, denom, 1.0), 0.0)
        for term in terms:
            r_in = r_in + term.input * view.vjp(term.weight, grad)
        degenerate += per_sample(torch.where(nonzero, 0.0, r_branch))
        if stab is not None:
            stab_share = grad * stab
            degenerate += per_sample(torch.where(pre == 0, stab_share, 0.0))
            absorbed_stab += per_sample(torch.where(pre == 0, 0.0, stab_share))
        if bias is not None:
            bias_full = torch.broadcast_to(bias, grad.shape)
            if rule.bias == "distribute":
                fan_in = view.fan_in(a.dtype, a.device)
                spreadable = fan_in > 0
                share = torch.where(spreadable, grad * bias_full / torch.where(spreadable, fan_in, 1.0), 0.0)
                r_in = r_in + view.vjp(view.ones_weight(), share)
                degenerate += per_sample(torch.where(spreadable, 0.0, grad * bias_full))
            else:
                absorbed_bias += per_sample(grad * bias_full)
    degenerate += per_sample(r_out * (1.0 - covered))
    return LinearResult(r_in, absorbed_bias, absorbed_stab, degenerate)
