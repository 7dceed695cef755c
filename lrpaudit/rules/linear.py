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
from .numeric import per_sample, safe_divide, stabilized_split
from .spec import Rule

Tensor = torch.Tensor


@dataclass
class Term:
    input: Tensor | None  # None: identically zero, the term is skipped
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


def _ones(a: Tensor) -> Tensor:
    """An all-ones input (expanded, not materialized)."""
    return torch.ones((1,) * a.dim(), dtype=a.dtype, device=a.device).expand_as(a)


def _split_signs(a: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """``(a+, a-)``, with None for a part that is identically zero (its terms contribute exactly nothing)."""
    low, high = torch.aminmax(a)
    a_pos = None if high <= 0 else (a if low >= 0 else a.clamp(min=0))
    a_neg = None if low >= 0 else (a if high <= 0 else a.clamp(max=0))
    return a_pos, a_neg


def build_branches(rule: Rule, view: LinearView, a: Tensor, z: Tensor) -> list[Branch]:
    """The branches of ``rule`` on this node, with biases as in ``absorb`` mode (bias modes are applied later)."""
    w, b = view.weight, view.bias
    name = rule.name
    if name in ("zero", "epsilon", "norm"):
        eps = float(rule.get("epsilon" if name == "epsilon" else "stabilizer"))
        return [Branch([Term(a, w)], b, eps, pre=z if rule.bias != "ignore" else None)]
    stab = float(rule.get("stabilizer"))
    if name == "wsquare":
        return [Branch([Term(_ones(a), w * w)], None if b is None else b * b, stab)]
    if name == "flat":
        return [Branch([Term(_ones(a), view.ones_weight())], None, stab)]
    a_pos, a_neg = _split_signs(a)
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


def _branch_pre(
    branch: Branch, terms: list[Term], bias: Tensor | None, view: LinearView, like: Tensor
) -> Tensor:
    """``Z_j + B_j``: the cached forward when the rule's forward is the model's, else the terms' maps summed."""
    if branch.pre is not None:
        return branch.pre
    pre = None
    for term in terms:
        part = view.apply(term.input, term.weight)
        pre = part if pre is None else pre + part
    if pre is None:
        pre = torch.zeros_like(like)
    return pre + bias if bias is not None else pre


def apply_linear_rule(rule: Rule, view: LinearView, a: Tensor, z: Tensor, r_out: Tensor) -> LinearResult:
    """Run the rule on one node for a batch: relevance to the input and the leak's bias/stabilizer/degenerate shares.

    Exact shortcuts only: terms whose input is identically zero are skipped (e.g. ``a-`` after a ReLU), the
    accounting splits are computed only where their masks are non-empty.
    """
    zeros = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
    absorbed_bias, absorbed_stab, degenerate = zeros, zeros, zeros
    r_in: Tensor | None = None
    coverage: Tensor | float = 0.0
    for branch in build_branches(rule, view, a, z):
        terms = [t for t in branch.terms if t.input is not None]
        bias = None if rule.bias == "ignore" else branch.bias
        pre = _branch_pre(branch, terms, bias, view, r_out)
        r_branch = r_out if branch.mask is None else r_out * branch.mask
        if branch.coeff != 1.0:
            r_branch = branch.coeff * r_branch
        coverage = coverage + (branch.coeff if branch.mask is None else branch.coeff * branch.mask)
        grad, stab_share, dead_share = stabilized_split(pre, r_branch, branch.stabilizer)
        absorbed_stab = absorbed_stab + stab_share
        degenerate = degenerate + dead_share
        for term in terms:
            part = term.input * view.vjp(term.weight, grad)
            r_in = part if r_in is None else r_in + part
        if bias is None:
            continue
        bias_share = grad * bias
        if rule.bias != "distribute":
            absorbed_bias = absorbed_bias + per_sample(bias_share)
            continue
        fan_in = view.fan_in(a.dtype, a.device)
        spread, unspreadable = safe_divide(bias_share, fan_in.expand_as(bias_share))
        part = view.vjp(view.ones_weight(), spread)
        r_in = part if r_in is None else r_in + part
        if unspreadable is not None:
            degenerate = degenerate + per_sample(torch.where(unspreadable, bias_share, 0.0))
    if isinstance(coverage, Tensor):
        degenerate = degenerate + per_sample(r_out * (1.0 - coverage))
    elif coverage != 1.0:
        degenerate = degenerate + (1.0 - coverage) * per_sample(r_out)
    if r_in is None:
        r_in = torch.zeros_like(a)
    return LinearResult(r_in, absorbed_bias, absorbed_stab, degenerate)
