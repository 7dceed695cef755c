"""A linear-type node seen as ``z = W a + b``: the map with any weight, its transpose, its connectivity.

Rules never look at op types: they ask a ``LinearView`` for ``apply(x, W)`` (the node's map with weight ``W`` and
no bias), ``vjp(W, g)`` (its transpose applied to ``g``), the bias broadcast to the output, and the number of real
(non-padding) inputs of each output. Pools are linear maps without weights: ``W`` is ``None`` and stands for the
pool's own weights, which are non-negative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .. import ops
from ..ir import Node

Tensor = torch.Tensor


def _pool_apply(node: Node) -> Callable[[Tensor], Tensor]:
    if node.op == "avgpool":
        return lambda x: ops.avgpool_apply(x, node.attrs)
    if node.op == "global_avgpool":
        return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=node.attrs.get("keepdims", True))
    return lambda x: x.mean(dim=tuple(node.attrs["axes"]), keepdim=node.attrs.get("keepdims", True))


def _pool_connect(node: Node) -> Callable[[Tensor], Tensor]:
    """The pool's connectivity map: each output's plain sum over the real (non-padding) inputs of its window.

    This is ``sum_i 1[i in RF(j)] x_i`` (what the flat rule's ``Z_ij = 1`` needs, and ``n_j`` for x = 1), unlike
    the pool's own map, whose weights are ``1 / count_j``.
    """
    if node.op == "global_avgpool":
        return lambda x: x.sum(dim=tuple(range(2, x.dim())), keepdim=node.attrs.get("keepdims", True))
    if node.op == "mean":
        return lambda x: x.sum(dim=tuple(node.attrs["axes"]), keepdim=node.attrs.get("keepdims", True))
    attrs = node.attrs
    kernel, stride, pads = tuple(attrs["kernel"]), tuple(attrs["stride"]), tuple(attrs["pads"])
    dims, ceil_mode = len(kernel), bool(attrs.get("ceil_mode", False))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]

    def window_sum(x: Tensor) -> Tensor:
        out_sizes, pad_pairs = [], []
        for axis in range(dims):
            size, k, s, begin, end = (
                x.shape[2 + axis],
                kernel[axis],
                stride[axis],
                pads[axis],
                pads[axis + dims],
            )
            span = size + begin + end - k
            out = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (out - 1) * s >= size + begin:
                out -= 1
            out_sizes.append(out)
            pad_pairs.append((begin, max(end, (out - 1) * s + k - size - begin)))
        flat_pads = [p for pair in reversed(pad_pairs) for p in pair]
        xs = F.pad(x.reshape((x.shape[0] * x.shape[1], 1) + tuple(x.shape[2:])), flat_pads)
        ones = torch.ones((1, 1) + kernel, dtype=x.dtype, device=x.device)
        y = conv(xs, ones, None, stride)
        y = y[(slice(None), slice(None)) + tuple(slice(0, n) for n in out_sizes)]
        return y.reshape(tuple(x.shape[:2]) + tuple(out_sizes))

    return window_sum


# Stands for "the pool's connectivity" where a weight is expected (pools have no weight of their own).
_POOL_CONNECTIVITY = torch.ones(())


@dataclass
class LinearView:
    node: Node
    input_shape: tuple[int, ...]
    weight: Tensor | None
    bias: Tensor | None  # broadcastable to the output
    _apply: Callable[[Tensor, Tensor | None], Tensor]
    _connect: Callable[[Tensor], Tensor] | None = None  # pools: the 0/1 connectivity map
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def is_pool(self) -> bool:
        return self.weight is None

    def apply(self, x: Tensor, weight: Tensor | None) -> Tensor:
        """The node's map with ``weight`` and no bias."""
        if weight is _POOL_CONNECTIVITY:
            return self._connect(x)
        return self._apply(x, weight)

    def vjp(self, weight: Tensor | None, grad: Tensor) -> Tensor:
        """``W^T grad``: the transpose of the bias-free map (exact, since the map is linear).

        Direct transposed kernels where they exist (no forward re-run); autograd through the map otherwise.
        """
        direct = None if self.is_pool else _direct_vjp(self.node, self.input_shape, weight, grad)
        if direct is not None:
            return direct
        probe = torch.zeros(self.input_shape, dtype=grad.dtype, device=grad.device, requires_grad=True)
        with torch.enable_grad():
            out = self.apply(probe, weight)
            (result,) = torch.autograd.grad(out, probe, grad)
        return result

    def ones_weight(self) -> Tensor | None:
        """Weight whose map counts the real inputs of each output (the connectivity).

        For pools this is a marker that ``apply``/``vjp`` resolve to the window sum over real inputs (Z_ij = 1 on
        the receptive field, as the flat rule and ``n_j`` need), not the pool's own ``1 / count_j`` weights.
        """
        if self.weight is None:
            return _POOL_CONNECTIVITY
        if "ones" not in self._cache:
            self._cache["ones"] = torch.ones_like(self.weight)
        return self._cache["ones"]

    def fan_in(self, dtype: torch.dtype, device) -> Tensor:
        """n_j: the number of real (non-padding) inputs feeding each output, batch dim of size 1."""
        if "fan_in" not in self._cache:
            ones = torch.ones((1,) + tuple(self.input_shape[1:]), dtype=dtype, device=device)
            self._cache["fan_in"] = self.apply(ones, self.ones_weight())
        return self._cache["fan_in"]


def _direct_vjp(
    node: Node, input_shape: tuple[int, ...], weight: Tensor | None, grad: Tensor
) -> Tensor | None:
    """The transpose of linear / affine / conv / conv_transpose applied to ``grad`` without autograd."""
    if weight is None:
        return None
    if node.op == "linear":
        return grad @ weight
    if node.op == "affine":
        return grad * weight.reshape((1, -1) + (1,) * (grad.dim() - 2))
    attrs = node.attrs
    dims = weight.dim() - 2
    pads = attrs["pads"]
    if tuple(pads[:dims]) != tuple(pads[dims:]):
        return None
    if node.op == "conv":
        transposed, out_pad = False, [0] * dims
    elif node.op == "conv_transpose" and all(
        p < max(s, d) for p, s, d in zip(attrs["output_padding"], attrs["stride"], attrs["dilation"])
    ):
        transposed, out_pad = True, list(attrs["output_padding"])
    else:
        return None
    shape_only = grad.new_empty(1).expand(input_shape)
    return torch.ops.aten.convolution_backward(
        grad,
        shape_only,
        weight,
        None,
        list(attrs["stride"]),
        list(pads[:dims]),
        list(attrs["dilation"]),
        transposed,
        out_pad,
        attrs["groups"],
        (True, False, False),
    )[0]


def linear_view(
    node: Node, params: dict[str, Tensor], input_shape: tuple[int, ...], out_rank: int
) -> LinearView:
    """Build the view for a linear-type node or a pool, with params in the propagation dtype."""
    if node.op in ops.LINEAR_APPLY:
        apply_fn = ops.LINEAR_APPLY[node.op]
        weight, bias = params["weight"], params.get("bias")
        if bias is not None and node.op != "linear":
            bias = bias.reshape((1, -1) + (1,) * (out_rank - 2))
        return LinearView(node, input_shape, weight, bias, lambda x, w: apply_fn(x, w, None, node.attrs))
    pool = _pool_apply(node)
    return LinearView(node, input_shape, None, None, lambda x, w: pool(x), _pool_connect(node))
