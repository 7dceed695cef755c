"""Independent dense references for the transformer rules (DESIGN section 12), one sample at a time.

Nothing here imports ``lrpaudit.rules`` or ``lrpaudit.ops``. Every rule is written out on explicit matrices:

- norms: the matrix of ``x -> g (x - mu) / sigma`` with sigma a constant is built entry by entry,
  ``W_ji = g_j / sigma (delta_ij - 1/N)`` on each normalized group (``g_j / sigma delta_ij`` for RMSNorm), and the
  epsilon rule of ``dense.dense_rule`` runs on it with ``b = beta``;
- softmax: the Jacobian ``J_ji = ds_j / dx_i`` from torch's autograd of ``torch.softmax``, the Taylor root's bias
  ``b_j = s_j - sum_i x_i J_ji``, and ``R_i = sum_j x_i J_ji / s_j R_j`` (for ``s_j = 0`` the limit
  ``J_ji / s_j = delta_ij - s_i``); logits with ``s = 0`` (masked) are taken as absent (``x = 0``);
- products: the Jacobian ``W_k`` of the torch op (``torch.matmul``, ``torch.einsum``, ``*``) with respect to factor
  ``k`` at the sample, and the epsilon rule with ``Z_ij = x_k,i W_k,ji`` (``sum_i Z_ij = o_j``: the product is
  linear in each factor), divided by the number of factors (uniform) or given to one factor (constant factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tests.helpers.dense import DenseResult, dense_rule

Tensor = torch.Tensor
DT = torch.float64


# ---------------------------------------------------------------- norms


def norm_groups(shape: tuple[int, ...], op: str, axes=None, groups=None) -> list[list[int]]:
    """Flat indices (of one sample of ``shape``) of each normalized group."""
    n = math.prod(shape)
    index = torch.arange(n).reshape(shape)
    if op == "groupnorm":
        per = n // groups
        return [list(range(g * per, (g + 1) * per)) for g in range(groups)]
    dims = sorted(a % (len(shape) + 1) - 1 for a in axes)  # axes count the batch dim; shape does not
    lead = [d for d in range(len(shape)) if d not in dims]
    moved = index.permute(lead + dims)
    size = math.prod(shape[d] for d in dims)
    return [row.tolist() for row in moved.reshape(-1, size)]


def norm_matrices(x: Tensor, op, axes, groups, eps_norm, center, weight, bias):
    """``(W, b, conn)`` of a normalization of one sample ``x`` (no batch dim), sigma held constant."""
    flat = x.reshape(-1)
    n = flat.numel()
    shape = tuple(x.shape)
    gain = _per_element(weight, shape, op, 1.0)
    beta = _per_element(bias, shape, op, 0.0)
    W = torch.zeros(n, n, dtype=DT)
    conn = torch.zeros(n, n, dtype=DT)
    for members in norm_groups(shape, op, axes, groups):
        size = len(members)
        values = flat[members]
        mu = values.mean() if center else 0.0
        sigma = math.sqrt(float(((values - mu) ** 2).mean()) + eps_norm)
        for j in members:
            for i in members:
                if center:
                    W[j, i] = gain[j] / sigma * ((1.0 if i == j else 0.0) - 1.0 / size)
                    conn[j, i] = 1.0
                elif i == j:
                    W[j, i] = gain[j] / sigma
                    conn[j, i] = 1.0
    return W, beta, conn


def _per_element(param: Tensor | None, shape: tuple[int, ...], op: str, absent: float) -> Tensor:
    """A norm's weight/bias as one value per element of a sample (``absent`` when the norm has none)."""
    if param is None:
        return torch.full((math.prod(shape),), absent, dtype=DT)
    if op == "groupnorm":
        return param.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape).reshape(-1).to(DT)
    return param.expand(shape).reshape(-1).to(DT)


def dense_norm(
    x, z, R, *, op, axes, groups, eps_norm, center, weight, bias, epsilon, bias_mode
) -> DenseResult:
    W, beta, conn = norm_matrices(x, op, axes, groups, eps_norm, center, weight, bias)
    return dense_rule("epsilon", {"epsilon": epsilon}, bias_mode, W, beta, conn, x, z, R)


def torch_norm(x: Tensor, *, op, axes, groups, eps_norm, center, weight, bias) -> Tensor:
    """The forward with torch's own functions (layer_norm, group_norm, rms_norm), batch included."""
    import torch.nn.functional as F

    if op == "groupnorm":
        return F.group_norm(x, groups, weight, bias, eps_norm)
    dims = tuple(x.shape[a] for a in sorted(a % x.dim() for a in axes))
    if center:
        return F.layer_norm(x, dims, weight, bias, eps_norm)
    y = F.rms_norm(x, dims, weight, eps_norm)
    return y + bias if bias is not None else y


# ---------------------------------------------------------------- softmax


@dataclass
class SoftmaxResult:
    r_in: Tensor
    taylor_bias: float


def dense_softmax_row(x: Tensor, R: Tensor) -> SoftmaxResult:
    """The Taylor rule on one softmax row ``x`` (1-D) with output relevance ``R``."""
    s = torch.softmax(x, dim=0)
    masked = s == 0
    xt = torch.where(masked, torch.zeros_like(x), x)
    J = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, dim=0), x)  # J[j, i] = ds_j / dx_i
    n = x.numel()
    r_in = torch.zeros(n, dtype=DT)
    taylor_bias = 0.0
    for j in range(n):
        if s[j] > 0:
            ratio = J[j] / s[j]  # ratio[i] = J_ji / s_j
            bias_over_s = float((s[j] - (xt * J[j]).sum()) / s[j])
        else:
            ratio = (torch.arange(n) == j).to(DT) - s
            bias_over_s = 1.0 - float(xt[j]) + float((s * xt).sum())
        r_in = r_in + xt * ratio * R[j]
        taylor_bias += float(R[j]) * bias_over_s
    return SoftmaxResult(torch.where(masked, torch.zeros_like(r_in), r_in), taylor_bias)


def dense_softmax(x: Tensor, R: Tensor, axis: int, coerce_2d: bool = False) -> SoftmaxResult:
    """The Taylor rule on one sample (no batch dim); ``axis`` counts the batch dim, as the IR's attrs do."""
    if coerce_2d:
        rows_x = x.reshape(tuple(x.shape[: axis - 1]) + (-1,)).reshape(-1, math.prod(x.shape[axis - 1 :]))
        rows_r = R.reshape(rows_x.shape)
        moved_shape = None
    else:
        dim = axis % (x.dim() + 1) - 1
        moved_x, moved_r = x.movedim(dim, -1), R.movedim(dim, -1)
        moved_shape = moved_x.shape
        rows_x, rows_r = moved_x.reshape(-1, x.shape[dim]), moved_r.reshape(-1, x.shape[dim])
    parts = [dense_softmax_row(rows_x[k], rows_r[k]) for k in range(rows_x.shape[0])]
    r_rows = torch.stack([p.r_in for p in parts])
    if moved_shape is None:
        r_in = r_rows.reshape(x.shape)
    else:
        r_in = r_rows.reshape(moved_shape).movedim(-1, axis % (x.dim() + 1) - 1)
    return SoftmaxResult(r_in, sum(p.taylor_bias for p in parts))


# ---------------------------------------------------------------- products


def product_forward(op: str, attrs: dict, factors: list[Tensor]) -> Tensor:
    """The product with torch directly (batch included)."""
    if op == "matmul":
        return torch.matmul(factors[0], factors[1])
    if op == "einsum":
        return torch.einsum(attrs["equation"], *factors)
    if op == "mul":
        return factors[0] * factors[1]
    raise ValueError(op)


def dense_product(op, attrs, factors, o, R, *, epsilon, constant: int | None) -> list[DenseResult]:
    """Uniform (``constant=None``) or constant-factor rule on one sample (factors and o with batch dim 1)."""
    results = []
    n = len(factors)
    for k, x in enumerate(factors):
        if constant is not None and k == constant:
            results.append(DenseResult(torch.zeros(x.numel(), dtype=DT), 0.0, 0.0, 0.0))
            continue

        def as_fn(v: Tensor, k=k, shape=x.shape) -> Tensor:
            parts = list(factors)
            parts[k] = v.reshape(shape)
            return product_forward(op, attrs, parts).reshape(-1)

        W = torch.autograd.functional.jacobian(as_fn, x.reshape(-1))
        conn = (W != 0).to(DT)
        share = R.reshape(-1) / (n if constant is None else 1)
        zero_b = torch.zeros(W.shape[0], dtype=DT)
        results.append(dense_rule("epsilon", {"epsilon": epsilon}, "absorb", W, zero_b, conn, x, o, share))
    return results
