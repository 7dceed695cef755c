"""The dense formulas of the self-check: Jacobian rows of a map, and every linear-type rule on explicit matrices."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rules.spec import Rule
from ..verdicts import relative

Tensor = torch.Tensor


@dataclass
class RuleCheck:
    node_id: str
    rule: str
    max_abs_dev: float
    scale: float
    units_checked: int
    units_total: int

    @property
    def rel_dev(self) -> float:
        return relative(self.max_abs_dev, self.scale)


def jacobian_rows(fn, x: Tensor, units: Tensor) -> Tensor:
    """Rows ``units`` of the Jacobian of ``fn`` at ``x`` (x has batch dim 1): shape (len(units), x.numel())."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x).reshape(-1)
        rows = []
        for unit in units.tolist():
            (grad,) = torch.autograd.grad(out[unit], x, retain_graph=True)
            rows.append(grad.reshape(-1))
    return torch.stack(rows) if rows else torch.zeros((0, x.numel()), dtype=x.dtype)


def _flat_bound(value, a: Tensor) -> Tensor:
    bound = torch.as_tensor(value, dtype=a.dtype)
    return bound.reshape(-1) if bound.dim() else bound.expand(a.numel())


def dense_rule(rule: Rule, W: Tensor, b: Tensor, conn: Tensor, a: Tensor, z: Tensor, r: Tensor) -> Tensor:
    """Rule on explicit matrices: W, conn (rows = output units), b, z, r over those units; a flat input."""
    pos, neg = W.clamp(min=0), W.clamp(max=0)
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    name = rule.name
    zero_b = torch.zeros_like(b)
    if name in ("zero", "epsilon", "norm"):
        eps = float(rule.get("epsilon" if name == "epsilon" else "stabilizer"))
        branches = [(W * a, b, eps, 1.0, None)]
    elif name == "wsquare":
        branches = [(W * W + 0 * a, b * b, float(rule.get("stabilizer")), 1.0, None)]
    elif name == "flat":
        branches = [(conn + 0 * a, zero_b, float(rule.get("stabilizer")), 1.0, None)]
    elif name in ("alphabeta", "zplus"):
        alpha = 1.0 if name == "zplus" else float(rule.get("alpha"))
        beta = 0.0 if name == "zplus" else float(rule.get("beta"))
        eps = float(rule.get("stabilizer"))
        branches = [(pos * a_pos + neg * a_neg, b.clamp(min=0), eps, alpha, None)]
        if beta:
            branches.append((neg * a_pos + pos * a_neg, b.clamp(max=0), eps, -beta, None))
    elif name == "gamma":
        g, eps = float(rule.get("gamma")), float(rule.get("stabilizer"))
        up, down = W + g * pos, W + g * neg
        branches = [
            (up * a_pos + down * a_neg, b + g * b.clamp(min=0), eps, 1.0, z > 0),
            (down * a_pos + up * a_neg, b + g * b.clamp(max=0), eps, 1.0, z < 0),
        ]
    elif name == "zbox":
        low, high = _flat_bound(rule.get("low"), a), _flat_bound(rule.get("high"), a)
        branches = [(W * a - pos * low - neg * high, zero_b, float(rule.get("stabilizer")), 1.0, None)]
    else:
        raise ValueError(name)
    result = torch.zeros(W.shape[1], dtype=W.dtype)
    for Z, B, eps, coeff, mask in branches:
        if rule.bias == "ignore":
            B = zero_b
        pre = Z.sum(dim=1) + B
        D = pre + eps * torch.where(pre >= 0, 1.0, -1.0).to(pre.dtype)
        if rule.bias == "distribute":
            n = conn.sum(dim=1, keepdim=True)
            Z = Z + torch.where(n > 0, (B[:, None] / torch.where(n > 0, n, 1.0)) * conn, 0.0)
        share = coeff * r * (mask.to(r.dtype) if mask is not None else 1.0)
        share = torch.where(D != 0, share / torch.where(D != 0, D, 1.0), 0.0)
        result = result + (Z * share[:, None]).sum(dim=0)
    return result
