"""Independent dense references for the engine tests: effective matrices of linear-type ops and pools, and every
linear-type rule written out with explicit ``Z_ij`` matrices, straight from DESIGN section 5.

Nothing here imports or mirrors ``lrpaudit.rules`` or ``lrpaudit.verify``: the effective matrix ``W`` of a
convolution comes from the Jacobian of the *torch* op (``torch.nn.functional``), average-pool matrices are built
window by window, and the rules are evaluated branch by branch as

    D^k_j = sum_i Z^k_ij + B^k_j + E^k_j,   E^k_j = eps * sign(sum_i Z^k_ij + B^k_j)  (sign(0) = +1)
    R_i   = sum_k c_k sum_j Z^k_ij / D^k_j * R_j

with the section 6 accounting (bias share, stabilizer share, degenerate units) computed alongside.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F

from lrpaudit.ir import Graph, Node

Tensor = torch.Tensor
DT = torch.float64


# ---------------------------------------------------------------- the dense rule


@dataclass
class DenseResult:
    """Relevance on the (flattened) input and the accounting shares of one sample."""

    r_in: Tensor
    absorbed_bias: float
    absorbed_stabilizer: float
    degenerate: float
    # sum_k sum_j |c_k R_j| (sum_i |Z_ij| + |B_j| + |E_j|) / |D_j|: the size of the terms that are summed. Where
    # some D_j nearly cancels (sum_i Z_ij ~ 0 under `ignore`), rounding scales with this, not with sum |R|.
    magnitude: float = 0.0


def _sign(t: Tensor) -> Tensor:
    """sign with sign(0) = +1, as DESIGN section 5 asks for the stabilizer."""
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))


def dense_branches(
    name: str, params: dict, W: Tensor, b: Tensor, conn: Tensor, a: Tensor, z: Tensor
) -> list[tuple[float, Tensor, Tensor, float, Tensor]]:
    """The branches of a rule as ``(c_k, Z (J x I), B (J,), eps, mask (J,))`` in ``absorb`` form.

    ``W`` (J x I) is the effective matrix, ``b`` the bias per output, ``conn`` the 0/1 receptive fields, ``a`` the
    flat input, ``z`` the forward output (bias included; the gamma rule picks its branch by its sign).
    """
    n_out, n_in = W.shape
    A = a.reshape(1, n_in).expand(n_out, n_in)
    Ap, An = A.clamp(min=0), A.clamp(max=0)
    Wp, Wn = W.clamp(min=0), W.clamp(max=0)
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    ones = torch.ones(n_out, dtype=W.dtype)
    zero_b = torch.zeros(n_out, dtype=W.dtype)
    if name in ("zero", "epsilon", "norm"):
        eps = params["epsilon"] if name == "epsilon" else params.get("stabilizer", 0.0)
        return [(1.0, A * W, b, eps, ones)]
    stab = params["stabilizer"]
    if name == "gamma":
        g = params["gamma"]
        up, down = W + g * Wp, W + g * Wn
        pos_mask, neg_mask = (z > 0).to(W.dtype), (z < 0).to(W.dtype)
        return [
            (1.0, Ap * up + An * down, b + g * bp, stab, pos_mask),
            (1.0, Ap * down + An * up, b + g * bn, stab, neg_mask),
        ]
    if name in ("alphabeta", "zplus"):
        alpha, beta = (1.0, 0.0) if name == "zplus" else (params["alpha"], params["beta"])
        branches = [(alpha, Ap * Wp + An * Wn, bp, stab, ones)]
        if beta != 0:
            branches.append((-beta, Ap * Wn + An * Wp, bn, stab, ones))
        return branches
    if name == "wsquare":
        return [(1.0, W * W, b * b, stab, ones)]
    if name == "flat":
        return [(1.0, conn.clone(), zero_b, stab, ones)]
    if name == "zbox":
        low = torch.as_tensor(params["low"], dtype=W.dtype).reshape(-1).expand(n_in).reshape(1, n_in)
        high = torch.as_tensor(params["high"], dtype=W.dtype).reshape(-1).expand(n_in).reshape(1, n_in)
        return [(1.0, A * W - low * Wp - high * Wn, zero_b, stab, ones)]
    raise ValueError(name)


def dense_rule(
    name: str,
    params: dict,
    bias_mode: str,
    W: Tensor,
    b: Tensor,
    conn: Tensor,
    a: Tensor,
    z: Tensor,
    R: Tensor,
) -> DenseResult:
    """Evaluate one rule on one sample with explicit matrices (flat a, z, R)."""
    a, z, R = a.reshape(-1), z.reshape(-1), R.reshape(-1)
    r_in = torch.zeros(W.shape[1], dtype=W.dtype)
    bias_share = stab_share = degenerate = magnitude = 0.0
    covered = torch.zeros_like(R)
    for coeff, Z, B, eps, mask in dense_branches(name, params, W, b, conn, a, z):
        if bias_mode == "ignore":
            B = torch.zeros_like(B)
        stranded = torch.zeros_like(B)
        if bias_mode == "distribute":
            # Z_ij += B_j / n_j over the real inputs of j. An output with no real input at all (n_j = 0, e.g. the
            # output_padding rows of a transposed conv) has nowhere to spread its bias: that share is stranded
            # and reported as degenerate (a unit "fed only by its bias").
            n = conn.sum(dim=1)
            spread = torch.where(n > 0, B / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(B))
            Z = Z + conn * spread.reshape(-1, 1)
            stranded = torch.where(n > 0, torch.zeros_like(B), B)
            B_kept = torch.zeros_like(B)
        else:
            B_kept = B
        pre = Z.sum(dim=1) + B_kept + stranded  # the D' of DESIGN: sum_i Z_ij + B_j
        E = eps * _sign(pre) if eps else torch.zeros_like(pre)
        D = pre + E
        Rk = coeff * mask * R
        covered = covered + coeff * mask
        ok = D != 0
        ratio = torch.where(ok, Rk / torch.where(ok, D, torch.ones_like(D)), torch.zeros_like(D))
        r_in = r_in + (Z * ratio.reshape(-1, 1)).sum(dim=0)
        terms = Z.abs().sum(dim=1) + B_kept.abs() + stranded.abs() + E.abs()
        magnitude += float((ratio.abs() * terms).sum())
        bias_share += float((ratio * B_kept).sum()) if bias_mode == "absorb" else 0.0
        stab_share += float((ratio * E)[pre != 0].sum())
        degenerate += (
            float((ratio * E)[pre == 0].sum()) + float(Rk[~ok].sum()) + float((ratio * stranded).sum())
        )
    degenerate += float((R * (1 - covered)).sum())  # gamma: z_j = 0 passes nothing
    return DenseResult(r_in, bias_share, stab_share, degenerate, magnitude)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads (tiny float64 ops are far slower multithreaded on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rule_params(rule) -> dict:
    """Every parameter of a ``lrpaudit.rules.spec.Rule`` with its defaults filled in."""
    from lrpaudit.rules.spec import RULES

    return {key: rule.get(key) for key in RULES[rule.name].params}


# ---------------------------------------------------------------- op cases with their dense matrices


@dataclass
class OpCase:
    """One linear-type node or pool: its IR form, a torch forward written independently, and the input shape."""

    name: str
    op: str
    attrs: dict
    in_shape: tuple[int, ...]
    weight: Tensor | None = None
    bias: Tensor | None = None
    torch_forward: Callable[[Tensor, Tensor | None, Tensor | None], Tensor] | None = None
    pool_matrix: Callable[[], Tensor] | None = None
    params: dict = field(default_factory=dict)

    def node(self, node_id: str = "n0", input_name: str = "x", output_name: str = "y") -> Node:
        params = {}
        if self.weight is not None:
            params["weight"] = self.weight
        if self.bias is not None:
            params["bias"] = self.bias
        return Node(node_id, self.op, [input_name], [output_name], dict(self.attrs), params)

    def graph(self, batch: int) -> Graph:
        node = self.node()
        out_shape = (batch,) + tuple(self.out_shape)
        return Graph(["x"], ["y"], [node], shapes={"x": (batch,) + self.in_shape, "y": out_shape})

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.forward(torch.zeros((1,) + self.in_shape, dtype=DT)).shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        """The full op (bias included) on a batch, from the dense matrices for pools, torch ops otherwise."""
        if self.pool_matrix is not None:
            W, b, _ = self.dense()
            return (x.reshape(x.shape[0], -1) @ W.T + b).reshape((x.shape[0],) + self._pool_out)
        return self.torch_forward(x, self.weight, self.bias)

    def dense(self) -> tuple[Tensor, Tensor, Tensor]:
        return _dense_matrices(self.name)

    _pool_out: tuple[int, ...] = ()


def _jacobian(fn: Callable[[Tensor], Tensor], n_in: int, in_shape: tuple[int, ...]) -> Tensor:
    def flat(v: Tensor) -> Tensor:
        return fn(v.reshape((1,) + in_shape)).reshape(-1)

    return torch.autograd.functional.jacobian(flat, torch.zeros(n_in, dtype=DT))


@cache
def _dense_matrices(name: str) -> tuple[Tensor, Tensor, Tensor]:
    """(W, b, conn) of a case: W = d op / d x, b = op(0), conn = the 0/1 receptive fields."""
    case = CASES[name]
    if case.pool_matrix is not None:
        W = case.pool_matrix()
        return W, torch.zeros(W.shape[0], dtype=DT), (W != 0).to(DT)
    fw = case.torch_forward
    W = _jacobian(lambda x: fw(x, case.weight, None), case.n_in, case.in_shape)
    b = fw(torch.zeros((1,) + case.in_shape, dtype=DT), case.weight, case.bias).reshape(-1)
    if case.op == "affine":
        conn = torch.eye(case.n_in, dtype=DT)
    else:
        ones = torch.ones_like(case.weight)
        conn = (_jacobian(lambda x: fw(x, ones, None), case.n_in, case.in_shape) != 0).to(DT)
    return W, b, conn


def _avgpool_axis(length: int, k: int, s: int, pb: int, pe: int, ceil: bool, include_pad: bool):
    """Per-axis window membership (out x in, 0/1) and per-output counts for ONNX/torch average pooling."""
    span = length + pb + pe - k
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= length + pb:
        out -= 1
    member = torch.zeros(out, length, dtype=DT)
    count = torch.zeros(out, dtype=DT)
    for o in range(out):
        start = o * s - pb
        window = range(start, start + k)
        real = [p for p in window if 0 <= p < length]
        for p in real:
            member[o, p] = 1.0
        count[o] = sum(1 for p in window if -pb <= p < length + pe) if include_pad else len(real)
    return member, count


def avgpool_matrix(in_shape, kernel, stride, pads, ceil, include_pad) -> tuple[Tensor, tuple[int, ...]]:
    """Explicit average-pool matrix: W_ji = 1 / count_j for the real inputs i in j's window."""
    channels, spatial = in_shape[0], in_shape[1:]
    dims = len(spatial)
    W = torch.eye(channels, dtype=DT)
    counts = torch.ones(1, dtype=DT)
    out_spatial = []
    for axis in range(dims):
        member, count = _avgpool_axis(
            spatial[axis], kernel[axis], stride[axis], pads[axis], pads[axis + dims], ceil, include_pad
        )
        W = torch.kron(W, member)
        counts = torch.kron(counts, count)
        out_spatial.append(member.shape[0])
    counts = torch.kron(torch.ones(channels, dtype=DT), counts)
    return W / counts.reshape(-1, 1), (channels, *out_spatial)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=DT)


def _conv_case(name, seed, in_shape, c_out, kernel, stride, padding, dilation, groups) -> OpCase:
    gen = _gen(seed)
    dims = len(kernel)
    weight = _randn(gen, c_out, in_shape[0] // groups, *kernel)
    bias = _randn(gen, c_out)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    attrs = {
        "stride": tuple(stride),
        "dilation": tuple(dilation),
        "pads": tuple(padding) + tuple(padding),
        "groups": groups,
    }
    return OpCase(
        name,
        "conv",
        attrs,
        in_shape,
        weight,
        bias,
        lambda x, w, b: conv(x, w, b, tuple(stride), tuple(padding), tuple(dilation), groups),
    )


def _conv2d_asym(name, seed) -> OpCase:
    """Asymmetric ONNX pads [top, left, bottom, right] = [0, 1, 2, 1]: explicit zero padding, then a conv."""
    gen = _gen(seed)
    weight = _randn(gen, 3, 2, 3, 2)
    bias = _randn(gen, 3)
    attrs = {"stride": (2, 1), "dilation": (1, 1), "pads": (0, 1, 2, 1), "groups": 1}
    return OpCase(
        name,
        "conv",
        attrs,
        (2, 5, 4),
        weight,
        bias,
        lambda x, w, b: F.conv2d(F.pad(x, [1, 1, 0, 2]), w, b, (2, 1)),
    )


def _conv_t_case(name, seed, in_shape, c_out, kernel, stride, padding, out_pad, dilation, groups) -> OpCase:
    gen = _gen(seed)
    weight = _randn(gen, in_shape[0], c_out // groups, *kernel)
    bias = _randn(gen, c_out)
    attrs = {
        "stride": tuple(stride),
        "dilation": tuple(dilation),
        "pads": tuple(padding) + tuple(padding),
        "output_padding": tuple(out_pad),
        "groups": groups,
    }
    return OpCase(
        name,
        "conv_transpose",
        attrs,
        in_shape,
        weight,
        bias,
        lambda x, w, b: F.conv_transpose2d(
            x, w, b, tuple(stride), tuple(padding), tuple(out_pad), groups, tuple(dilation)
        ),
    )


def _linear_case(name, seed, n_in, n_out) -> OpCase:
    gen = _gen(seed)
    return OpCase(
        name,
        "linear",
        {},
        (n_in,),
        _randn(gen, n_out, n_in),
        _randn(gen, n_out),
        lambda x, w, b: F.linear(x, w, b),
    )


def _affine_case(name, seed, in_shape) -> OpCase:
    gen = _gen(seed)
    c = in_shape[0]
    shape = (1, c) + (1,) * (len(in_shape) - 1)

    def fw(x, w, b):
        y = x * w.reshape(shape)
        return y + b.reshape(shape) if b is not None else y

    return OpCase(name, "affine", {}, in_shape, _randn(gen, c), _randn(gen, c), fw)


def _pool_case(name, in_shape, kernel, stride, pads, ceil=False, include_pad=False) -> OpCase:
    W, out_spatial = avgpool_matrix(in_shape, kernel, stride, pads, ceil, include_pad)
    attrs = {
        "kernel": tuple(kernel),
        "stride": tuple(stride),
        "pads": tuple(pads),
        "ceil_mode": ceil,
        "count_include_pad": include_pad,
    }
    case = OpCase(name, "avgpool", attrs, in_shape, pool_matrix=lambda: W)
    case._pool_out = tuple(out_spatial)
    return case


def _global_pool_case(name, in_shape, op="global_avgpool", axes=None) -> OpCase:
    channels, hw = in_shape[0], math.prod(in_shape[1:])
    W = torch.kron(torch.eye(channels, dtype=DT), torch.full((1, hw), 1.0 / hw, dtype=DT))
    attrs = {"keepdims": True} if op == "global_avgpool" else {"axes": tuple(axes), "keepdims": False}
    case = OpCase(name, op, attrs, in_shape, pool_matrix=lambda: W)
    case._pool_out = (channels,) + ((1,) * (len(in_shape) - 1) if op == "global_avgpool" else ())
    return case


LINEAR_CASES = [
    _linear_case("linear", 1, 6, 4),
    _conv_case("conv1d", 2, (2, 9), 3, (3,), (2,), (1,), (1,), 1),
    _conv_case("conv2d_s2_p1", 3, (2, 6, 6), 3, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    _conv_case("conv2d_groups_dil", 4, (4, 7, 7), 6, (3, 3), (2, 1), (1, 2), (1, 2), 2),
    _conv2d_asym("conv2d_asym_pads", 5),
    _conv_case("conv3d", 6, (2, 4, 5, 4), 4, (2, 3, 2), (1, 2, 1), (1, 1, 0), (1, 1, 1), 2),
    _conv_t_case("conv_t2d_s2_op1_g2", 7, (4, 3, 3), 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 2),
    _conv_t_case("conv_t2d_asym_stride", 8, (2, 3, 2), 3, (2, 3), (2, 3), (0, 1), (1, 2), (1, 1), 1),
    _conv_t_case("conv_t2d_dil", 9, (2, 3, 3), 2, (2, 2), (1, 1), (1, 0), (0, 0), (2, 1), 1),
    _affine_case("affine2d", 10, (3, 2, 3)),
    _affine_case("affine1d", 11, (5,)),
]

POOL_CASES = [
    _pool_case("avgpool2d_pad_incl", (2, 5, 5), (3, 3), (2, 2), (1, 1, 1, 1), include_pad=True),
    _pool_case("avgpool2d_pad_excl", (2, 5, 5), (3, 3), (2, 2), (1, 1, 1, 1), include_pad=False),
    _pool_case("avgpool2d_ceil_excl", (2, 6, 5), (3, 2), (2, 2), (1, 0, 1, 0), ceil=True),
    _pool_case("avgpool2d_asym_incl", (1, 5, 4), (2, 3), (2, 1), (0, 1, 1, 1), include_pad=True),
    _pool_case("avgpool2d_asym_excl", (1, 5, 4), (2, 3), (2, 1), (0, 1, 1, 1), include_pad=False),
    _pool_case("avgpool2d_asym_ceil_excl", (2, 7, 6), (3, 2), (2, 2), (0, 1, 1, 0), ceil=True),
    _pool_case("avgpool1d_pad_incl", (2, 7), (3,), (2,), (1, 1), include_pad=True),
    _global_pool_case("global_avgpool", (3, 2, 3)),
    _global_pool_case("mean_hw", (3, 2, 3), op="mean", axes=(2, 3)),
]

CASES = {case.name: case for case in LINEAR_CASES + POOL_CASES}


def sample_inputs(case: OpCase, seed: int) -> tuple[Tensor, Tensor]:
    """Two batches: mixed-sign inputs with some exact zeros (3 samples), and non-negative inputs (2 samples)."""
    gen = _gen(1000 + seed)
    mixed = _randn(gen, 3, *case.in_shape)
    drop = torch.rand(mixed.shape, generator=gen, dtype=DT) < 0.2
    mixed[2][drop[2]] = 0.0
    nonneg = _randn(gen, 2, *case.in_shape).clamp(min=0)
    return mixed, nonneg
