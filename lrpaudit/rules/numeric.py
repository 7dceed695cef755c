"""Numerical pieces every rule shares: per-sample sums, division that passes nothing where the denominator is 0,
and the stabilized denominator with its accounting split (DESIGN section 6)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def per_sample(t: Tensor) -> Tensor:
    """Sum over every axis but the batch axis."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def sign(t: Tensor) -> Tensor:
    """``sign`` with ``sign(0) = +1``, as every stabilizer uses it (and Zennit)."""
    return torch.where(t >= 0, 1.0, -1.0).to(t.dtype)


def safe_divide(numerator: Tensor, denom: Tensor) -> tuple[Tensor, Tensor | None]:
    """``numerator / denom`` with 0 where ``denom == 0``; also returns the zero mask (None if there is none)."""
    zero = denom == 0
    if not bool(zero.any()):
        return numerator / denom, None
    return torch.where(zero, 0.0, numerator / torch.where(zero, 1.0, denom)), zero


def stabilized_split(pre: Tensor, r_out: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``g = R / (pre + eps sign pre)`` and the per-sample stabilizer and degenerate shares of the leak.

    The stabilizer share is ``sum g * eps sign(pre)`` over units that carry something (``pre != 0``). Units with
    ``pre == 0`` had nothing to carry: what their stabilizer absorbed is *degenerate*, and so is relevance on a
    unit whose whole denominator is exactly 0 (it passes nothing, never a division by zero).
    """
    stab = eps * sign(pre) if eps else None
    grad, dead = safe_divide(r_out, pre + stab if stab is not None else pre)
    degenerate = torch.zeros(r_out.shape[0], dtype=r_out.dtype, device=r_out.device)
    if dead is not None:
        degenerate = degenerate + per_sample(torch.where(dead, r_out, 0.0))
    if stab is None:
        return grad, torch.zeros_like(degenerate), degenerate
    stab_share = grad * stab
    empty = pre == 0
    if bool(empty.any()):
        degenerate = degenerate + per_sample(torch.where(empty, stab_share, 0.0))
        stab_share = torch.where(empty, 0.0, stab_share)
    return grad, per_sample(stab_share), degenerate
