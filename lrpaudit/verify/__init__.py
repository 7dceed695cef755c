"""Self-verification: each linear-type node's rule recomputed with dense matrices and compared to the engine.

The effective matrix ``W`` comes from the Jacobian of the node's own forward at the sample, the bias from
``b = f(a) - W a``; the rule is then written out with explicit ``Z_ij`` matrices (no gradient trick, no shared code
with ``rules/linear.py``; the dense formulas are in ``dense.py``, the transformer rules' checks in ``transformer.py``).
Large layers are checked on the output units that carry the most relevance (relevance
elsewhere set to zero: both sides are linear in R, so the comparison stays exact).
"""

from __future__ import annotations

import torch

from ..forward import cast_params
from ..ir import LINEAR_TYPE, POOLS, Graph, Node
from ..propagate import propagate
from ..rules.assign import RuleChoice, assign
from ..rules.linear import apply_linear_rule
from ..rules.linear_view import linear_view
from ..rules.spec import Rule
from .dense import RuleCheck, dense_rule, jacobian_rows
from .transformer import verify_transformer_node

__all__ = ["RuleCheck", "dense_rule", "verify_node", "verify_rules"]

Tensor = torch.Tensor


def verify_node(
    node: Node, rule: Rule, params: dict, a: Tensor, z: Tensor, r: Tensor, max_units: int
) -> RuleCheck:
    """Compare the engine's result for one sample (batch dim 1) with the dense formula."""
    view = linear_view(node, params, tuple(a.shape), z.dim())
    flat_r = r.reshape(-1)
    total = flat_r.numel()
    units = torch.argsort(flat_r.abs(), descending=True)[: min(max_units, total)]
    units = units[flat_r[units] != 0]
    masked = torch.zeros_like(flat_r)
    masked[units] = flat_r[units]
    masked = masked.reshape(r.shape)
    engine = apply_linear_rule(rule, view, a, z, masked).r_in.reshape(-1)

    def full(x: Tensor) -> Tensor:
        out = view.apply(x, view.weight)
        return out + view.bias if view.bias is not None else out

    W = jacobian_rows(full, a, units)
    if view.is_pool:
        conn = (W != 0).to(W.dtype)
    else:
        conn = jacobian_rows(lambda x: view.apply(x, view.ones_weight()), a, units)
    b = z.reshape(-1)[units] - W @ a.reshape(-1)
    dense = dense_rule(rule, W, b, conn, a.reshape(-1), z.reshape(-1)[units], flat_r[units])
    dev = float((engine - dense).abs().max()) if dense.numel() else 0.0
    return RuleCheck(node.id, rule.describe(), dev, float(flat_r[units].abs().sum()), len(units), total)


def verify_rules(
    graph: Graph,
    feeds: dict[str, Tensor],
    rules: RuleChoice,
    init: str = "logit",
    target=None,
    dtype: torch.dtype = torch.float64,
    max_units: int = 128,
    sample: int = 0,
) -> list[RuleCheck]:
    """Dense re-evaluation of every linear-type node's rule and every transformer rule (norms, products, softmax;
    ``verify_transformer``) on one sample; returns the deviations."""
    chosen = assign(graph, rules).complete().rules
    keep: dict[str, Tensor] = {}
    result = propagate(graph, feeds, chosen, init, target, dtype, keep_relevance=keep)
    values = result.values or {}
    params = cast_params(graph, dtype)
    checks = []
    pick = slice(sample, sample + 1)
    for node in graph.nodes:
        z, r = values[node.output][pick], keep[node.id][pick]
        if node.op in LINEAR_TYPE or node.op in POOLS:
            a = values[node.inputs[0]][pick]
            checks.append(verify_node(node, chosen[node.id], params[node.id], a, z, r, max_units))
            continue
        inputs = [values[name][pick] for name in node.inputs]
        check = verify_transformer_node(node, chosen[node.id], params[node.id], inputs, z, r, max_units)
        if check is not None:
            checks.append(check)
    return checks
