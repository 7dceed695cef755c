"""Rules for the non-linear-type ops: pass, routing, proportional add, bias neuron, gate, winner-take-all.

Each handler gets the node's input activations, its output, the relevance arriving at the output and its rule,
and returns the relevance per input plus the per-sample bias / stabilizer / degenerate shares of the leak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import UnsupportedOpError
from ..ir import Node
from ..ops import run_op
from .numeric import per_sample, stabilized_split
from .spec import Rule

Tensor = torch.Tensor


@dataclass
class OpResult:
    """Relevance per input and the per-sample shares of the leak (None: the rule has no such share)."""

    r_in: list[Tensor]
    absorbed_bias: Tensor | None = None
    absorbed_stabilizer: Tensor | None = None
    degenerate: Tensor | None = None
    absorbed_softmax: Tensor | None = None


Handler = Callable[[Node, list[Tensor], Tensor, Tensor, Rule, dict], OpResult]


def unbroadcast(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``t`` over the dimensions that broadcasting added or expanded, to get back ``shape``."""
    while t.dim() > len(shape):
        t = t.sum(dim=0)
    for axis, size in enumerate(shape):
        if size == 1 and t.shape[axis] != 1:
            t = t.sum(dim=axis, keepdim=True)
    return t


def pass_through(node, inputs, z, r_out, rule, params) -> OpResult:
    return OpResult([unbroadcast(r_out, tuple(inputs[0].shape))])


def route(node, inputs, z, r_out, rule, params) -> OpResult:
    """The op's transpose applied to R (exactly the gradient of a linear routing op).

    Output positions held by constants (constant padding, concat'ed constant parts such as a class token,
    ``where``'s constant operand) keep their relevance: that share is ``sum R`` over those positions, found by
    running the op on all-ones activations with the constants set to zero.
    """
    probes = [x.detach().clone().requires_grad_(True) for x in inputs]
    with torch.enable_grad():
        out = run_op(node.op, probes, node.attrs, params)
        grads = torch.autograd.grad(out, probes, r_out, allow_unused=True)
    r_in = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    constants = _constant_positions(node, inputs, params)
    held = None if constants is None else per_sample(torch.where(constants, r_out, 0.0))
    return OpResult(r_in, absorbed_bias=held)


def _constant_positions(node: Node, inputs: list[Tensor], params: dict) -> Tensor | None:
    """Where a routing op's output comes from a constant (None: it has no constant parts)."""
    attrs, zeroed = node.attrs, dict(params)
    if node.op == "pad" and attrs.get("mode", "constant") == "constant":
        attrs = {**attrs, "value": 0.0}
    elif node.op == "concat" and attrs.get("constants"):
        zeroed.update({name: torch.zeros_like(params[name]) for _, name in attrs["constants"]})
    elif node.op == "where" and len(inputs) == 1:
        zeroed["other"] = torch.zeros_like(params["other"])
    else:
        return None
    ones = [torch.ones_like(x) for x in inputs]
    return run_op(node.op, ones, attrs, zeroed) == 0


def winner_take_all(node, inputs, z, r_out, rule, params) -> OpResult:
    return route(node, inputs, z, r_out, rule, params)


def proportional_add(node, inputs, z, r_out, rule, params) -> OpResult:
    """R_k = c_k x_k / (z + eps sign z) R, with z = sum_k c_k x_k."""
    coeffs = node.attrs.get("coeffs") or [1.0] * len(inputs)
    grad, stab_share, degenerate = stabilized_split(z, r_out, float(rule.get("stabilizer")))
    r_in = [unbroadcast((c * x if c != 1.0 else x) * grad, tuple(x.shape)) for c, x in zip(coeffs, inputs)]
    return OpResult(r_in, absorbed_stabilizer=stab_share, degenerate=degenerate)


def uniform_add(node, inputs, z, r_out, rule, params) -> OpResult:
    """``flat`` on an add of K activations: each summand gets ``R / K`` whatever its value (shares cannot cancel:
    ``sum_k |R_k| = |R|``, and no summand of an exactly cancelling sum is ever divided by)."""
    share = r_out / len(inputs)
    return OpResult([unbroadcast(share, tuple(x.shape)) for x in inputs])


def bias_neuron(node, inputs, z, r_out, rule, params) -> OpResult:
    """z = x + c with the constant as a bias neuron; bias modes decide whether c keeps its share.

    Where c is exactly 0 the add is the identity and R passes unchanged, with no stabilizer: an additive mask's
    kept positions (0) then pass as a ``where`` mask or a fused kernel's causal flag passes them, and two files of
    one model give the same relevance whichever form their exporter wrote.
    """
    x, const = inputs[0], params["const"]
    identity = (const == 0).expand(z.shape)
    through = torch.where(identity, 0.0, r_out) if bool(identity.any()) else r_out
    pre = x + torch.zeros_like(const) if rule.bias == "ignore" else z
    grad, stab_share, degenerate = stabilized_split(pre, through, float(rule.get("stabilizer")))
    carried = pre if rule.bias != "absorb" else x + torch.zeros_like(const)
    # An additive mask (-inf, finfo.min) meets no relevance where it masks: 0 there, never 0 * inf = NaN.
    r_x = _where_relevant(grad, carried * grad)
    if through is not r_out:
        r_x = r_x + torch.where(identity, r_out, 0.0)
    r_x = unbroadcast(r_x, tuple(x.shape))
    bias_share = per_sample(_where_relevant(grad, grad * const)) if rule.bias == "absorb" else None
    return OpResult([r_x], absorbed_bias=bias_share, absorbed_stabilizer=stab_share, degenerate=degenerate)


def _where_relevant(grad: Tensor, value: Tensor) -> Tensor:
    """``value`` where relevance arrived (``grad != 0``), else 0."""
    return torch.where(grad != 0, value, 0.0)


def gate(node, inputs, z, r_out, rule, params) -> OpResult:
    """x * g with g treated as a constant: all relevance to x, none to the gate."""
    gate_index = node.attrs.get("gate")
    if gate_index is None:
        raise UnsupportedOpError(
            f"node {node.id!r}: mul of two activations where neither is a recognizable gate (sigmoid, "
            "hardsigmoid, ...): the gate rule needs one (use uniform or constant_factor)"
        )
    gated = 1 - gate_index
    r_in = [torch.zeros_like(x) for x in inputs]
    r_in[gated] = unbroadcast(r_out, tuple(inputs[gated].shape))
    return OpResult(r_in)


HANDLERS: dict[str, Handler] = {
    "pass": pass_through,
    "route": route,
    "winner_take_all": winner_take_all,
    "norm": proportional_add,  # for `add`; pools use the linear-type path
    "flat": uniform_add,  # for `add`; linear-type ops and pools use the linear-type path
    "bias_neuron": bias_neuron,
    "gate": gate,
}
