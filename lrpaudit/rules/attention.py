"""Rules of the transformer ops (DESIGN section 12): identity norms, the Taylor softmax, products of activations.

Each handler has the signature of :mod:`lrpaudit.rules.elementwise` and returns the relevance per input with the
closed-form shares of its leak:

- ``norm_identity`` (layernorm, groupnorm): sigma is a constant, the mean stays in the map (it is linear in x), so
  the node is the linear map ``x -> g C(x) / sigma`` (``C`` the centring over each normalized group, the identity
  for RMSNorm) with bias ``beta``, and the epsilon rule runs on it with the usual bias modes. This is what LXT 2.1
  computes (``(x - mean) / stop_gradient(std)``) and what AttnLRP Prop. 3.4 and CP-LRP call the identity rule.
- ``taylor`` (softmax): ``R_x = x (R - s sum R)``; its leak, the relevance of the Taylor root's bias, is the
  ``absorbed_softmax`` share, computed from its own formula so that the residual checks the rule.
- ``uniform`` / ``constant_factor`` (matmul, einsum, mul of activations): the epsilon rule on each factor with the
  others held constant (the product is linear in each factor), split evenly, or given to the one factor that is
  not a constant gate (CP-LRP).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..ir import ACTIVATION_OPS, ROUTING_OPS, Graph, Node
from ..ops import run_op
from ..ops.attention import normalize
from .elementwise import OpResult
from .numeric import per_sample, stabilized_split
from .spec import Rule

Tensor = torch.Tensor

# ---------------------------------------------------------------- norms


def _grouped(node: Node, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``x`` viewed so that each normalized group lies on the returned axes (layernorm: as is)."""
    if node.op == "groupnorm":
        return x.reshape(x.shape[0], node.attrs["groups"], -1), (2,)
    return x, tuple(node.attrs["axes"])


def _affine(node: Node, params: dict, name: str, like: Tensor) -> Tensor | None:
    """The norm's ``weight`` or ``bias`` broadcastable to its output (groupnorm: per channel on axis 1)."""
    value = params.get(name)
    if value is None or node.op != "groupnorm":
        return value
    return value.reshape((1, -1) + (1,) * (like.dim() - 2))


def norm_identity(node, inputs, z, r_out, rule, params) -> OpResult:
    """Epsilon on ``x -> g C(x) / sigma`` with bias ``beta`` (sigma from the forward, held constant)."""
    x = inputs[0]
    grouped, axes = _grouped(node, x)
    center = node.op == "groupnorm" or node.attrs.get("center", True)
    _, sigma = normalize(grouped, axes, node.attrs["eps"], center)
    weight, beta = _affine(node, params, "weight", z), _affine(node, params, "bias", z)
    pre = z - beta if (beta is not None and rule.bias == "ignore") else z
    grad, stab_share, degenerate = stabilized_split(pre, r_out, float(rule.get("epsilon")))

    def transpose(h: Tensor) -> Tensor:
        """The map's transpose: ``C(g h / sigma)`` (the centring is symmetric)."""
        h = h * weight if weight is not None else h
        h = _grouped(node, h)[0] / sigma
        if center:
            h = h - h.mean(dim=axes, keepdim=True)
        return h.reshape(x.shape)

    r_x = x * transpose(grad)
    bias_share = torch.zeros_like(stab_share)
    if beta is not None and rule.bias == "absorb":
        bias_share = per_sample(grad * beta)
    elif beta is not None and rule.bias == "distribute":
        # Z_ij += beta_j / n_j over j's inputs: with the centring every output reads its whole group; RMSNorm's
        # map is diagonal, so each output's bias goes to its own input.
        share = grad * beta
        if center:
            grouped_share = _grouped(node, share)[0]
            share = grouped_share.mean(dim=axes, keepdim=True).expand_as(grouped_share).reshape(x.shape)
        r_x = r_x + share
    return OpResult([r_x], absorbed_bias=bias_share, absorbed_stabilizer=stab_share, degenerate=degenerate)


# ---------------------------------------------------------------- softmax


def _along_axis(node: Node, *tensors: Tensor) -> tuple[int, list[Tensor]]:
    """The softmax axis and the tensors reshaped so that it is one axis (ONNX opset < 13: flattened from axis)."""
    axis = node.attrs["axis"]
    if not node.attrs.get("coerce_2d"):
        return axis, list(tensors)
    shape = tuple(tensors[0].shape[:axis]) + (-1,)
    return -1, [t.reshape(shape) for t in tensors]


def taylor_softmax(node, inputs, z, r_out, rule, params) -> OpResult:
    """``R_x = x (R - s sum R)``; logits with ``s = 0`` (masked) get nothing; the leak is the Taylor bias share.

    The Taylor expansion at x has the bias ``b_j = s_j - sum_i x_i ds_j/dx_i = s_j (1 - x_j + sum_i s_i x_i)``,
    whose relevance ``sum_j R_j b_j / s_j`` is the share: ``sum R - sum x R + (sum s x) sum R`` per row.
    """
    axis, (x, s, r) = _along_axis(node, inputs[0], z, r_out)
    masked = s == 0
    x = torch.where(masked, torch.zeros_like(x), x)  # -inf or finfo.min: a masked logit is absent
    total = r.sum(dim=axis, keepdim=True)
    r_x = torch.where(masked, torch.zeros_like(x), x * (r - s * total))
    mean_logit = (s * x).sum(dim=axis, keepdim=True)
    taylor_bias = total - (x * r).sum(dim=axis, keepdim=True) + mean_logit * total
    return OpResult([r_x.reshape(inputs[0].shape)], absorbed_softmax=per_sample(taylor_bias))


# ---------------------------------------------------------------- products of activations


def _factor_maps(node: Node, inputs: list[Tensor], grad: Tensor, params: dict) -> list[Tensor]:
    """``d o / d x_k ^T grad`` for every factor: the transpose of the product as a linear map of that factor."""
    probes = [x.detach().clone().requires_grad_(True) for x in inputs]
    with torch.enable_grad():
        out = run_op(node.op, probes, node.attrs, params)
        return list(torch.autograd.grad(out, probes, grad))


def uniform(node, inputs, z, r_out, rule, params) -> OpResult:
    """Each of the n factors gets ``x_k * (d o/d x_k)^T (R / (o + eps sign o)) / n``.

    The product is linear in each factor, so ``sum x_k * (d o/d x_k)^T g = sum o g`` for every k: the node passes
    ``sum R o / (o + eps sign o)`` and leaks the stabilizer share only.
    """
    grad, stab_share, degenerate = stabilized_split(z, r_out, float(rule.get("epsilon")))
    n = len(inputs)
    r_in = [x * back / n for x, back in zip(inputs, _factor_maps(node, inputs, grad, params))]
    return OpResult(r_in, absorbed_stabilizer=stab_share, degenerate=degenerate)


def constant_factor(node, inputs, z, r_out, rule, params) -> OpResult:
    """The ``factor``-th input is a constant gate; the other gets ``v * (d o/d v)^T (R / (o + eps sign o))``."""
    factor = int(rule.get("factor"))
    if len(inputs) != 2:
        raise ConfigError(
            f"node {node.id!r}: rule constant_factor needs a product of two activations, {node.op} has "
            f"{len(inputs)} (use uniform)"
        )
    if factor < 0:
        raise ConfigError(
            f"node {node.id!r}: rule constant_factor: relevance reached a product where neither factor is "
            "attention weights (a softmax output) or a gate (an activation output); set factor: 0 or 1, or "
            "use uniform"
        )
    grad, stab_share, degenerate = stabilized_split(z, r_out, float(rule.get("epsilon")))
    other = 1 - factor
    r_in = [torch.zeros_like(x) for x in inputs]
    r_in[other] = inputs[other] * _factor_maps(node, inputs, grad, params)[other]
    return OpResult(r_in, absorbed_stabilizer=stab_share, degenerate=degenerate)


# Ops a factor's origin is traced back through: they move or scale values but do not make them.
_TRANSPARENT = ROUTING_OPS | {"mul_const"}


def _origin(name: str, producers: dict[str, Node]) -> Node | None:
    node = producers.get(name)
    while node is not None and node.op in _TRANSPARENT and len(node.inputs) == 1:
        node = producers.get(node.inputs[0])
    return node


def constant_factor_index(graph: Graph, node: Node) -> int | None:
    """Which input of a product CP-LRP holds constant.

    A recognized gate (``attrs["gate"]``); else the one factor computed by a softmax (attention weights); else
    the one computed by an activation or a recognized gate product (the gate of a gated MLP, also when SiLU is
    exported as ``x * sigmoid(x)``); None when no single factor qualifies (Q K^T: CP-LRP sends it nothing).
    """
    if node.attrs.get("gate") is not None:
        return int(node.attrs["gate"])
    if len(node.inputs) != 2:
        return None
    producers = graph.producers()
    origins = [_origin(name, producers) for name in node.inputs]
    for kind in (_is_softmax, _is_activation):
        hits = [k for k, origin in enumerate(origins) if origin is not None and kind(origin)]
        if len(hits) == 1:
            return hits[0]
    return None


def _is_softmax(node: Node) -> bool:
    return node.op == "softmax"


def _is_activation(node: Node) -> bool:
    """An activation's output, or a gated product such as SiLU written out as ``x * sigmoid(x)``."""
    return node.op in ACTIVATION_OPS or (node.op == "mul" and node.attrs.get("gate") is not None)


def resolve(graph: Graph, node: Node, rule: Rule) -> Rule:
    """The node's rule with graph-dependent parameters filled in (constant_factor's automatic factor)."""
    if rule.name != "constant_factor" or not math.isclose(float(rule.get("factor")), -1.0):
        return rule
    factor = constant_factor_index(graph, node)
    if factor is None:
        return rule
    return Rule(rule.name, bias=rule.bias, **{**rule.params, "factor": factor})


HANDLERS = {
    "norm_identity": norm_identity,
    "taylor": taylor_softmax,
    "uniform": uniform,
    "constant_factor": constant_factor,
}
