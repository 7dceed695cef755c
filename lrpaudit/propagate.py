"""The backward relevance pass over the IR, with the per-node, per-sample accounting of DESIGN section 6."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .errors import ConfigError, InputError
from .forward import cast_params, run_forward
from .ir import LINEAR_TYPE, POOLS, Graph, Node, check_batch_axis
from .rules.assign import RuleChoice, assign
from .rules.dispatch import handler_for
from .rules.linear import apply_linear_rule
from .rules.linear_view import linear_view
from .rules.numeric import per_sample
from .rules.spec import RULES, Rule

Tensor = torch.Tensor


def relative(value: Tensor, scale: Tensor) -> Tensor:
    """``|value| / scale`` per sample; where the scale is 0, the absolute figure (as ``verdicts.relative``)."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, value.abs() / safe, value.abs())


@dataclass
class NodeRecord:
    """What one node did to the relevance, per sample (tensors of shape ``(batch,)``)."""

    node_id: str
    node_name: str | None  # the node's name in an ONNX file (None for TorchScript)
    op: str
    rule: str
    bias_mode: str
    r_received: Tensor
    r_passed: Tensor
    absorbed_bias: Tensor
    absorbed_stabilizer: Tensor
    absorbed_softmax: Tensor
    degenerate: Tensor
    scale: Tensor

    @property
    def leak(self) -> Tensor:
        return self.r_received - self.r_passed

    @property
    def residual(self) -> Tensor:
        return (
            self.leak
            - self.absorbed_bias
            - self.absorbed_stabilizer
            - self.absorbed_softmax
            - self.degenerate
        )

    @property
    def rel_error(self) -> Tensor:
        return relative(self.leak, self.scale)

    @property
    def rel_residual(self) -> Tensor:
        return relative(self.residual, self.scale)


@dataclass
class Propagation:
    """The result of one LRP pass over a batch."""

    targets: Tensor
    output_relevance: Tensor
    input_relevance: dict[str, Tensor]
    records: list[NodeRecord]
    output: Tensor
    notes: list[str] = field(default_factory=list)
    values: dict[str, Tensor] | None = None  # every activation, kept only when relevance is kept

    @property
    def r_output(self) -> Tensor:
        return per_sample(self.output_relevance)

    @property
    def output_scale(self) -> Tensor:
        return per_sample(self.output_relevance.abs())

    @property
    def r_input(self) -> Tensor:
        return sum(per_sample(r) for r in self.input_relevance.values())

    @property
    def leak(self) -> Tensor:
        return self.r_output - self.r_input

    @property
    def rel_error(self) -> Tensor:
        return relative(self.leak, self.output_scale)

    def total(self, category: str) -> Tensor:
        """Sum over nodes of one accounting category (``verdicts.CATEGORIES``: the shares and the residual)."""
        return sum((getattr(r, category) for r in self.records), torch.zeros_like(self.r_output))


def output_relevance(output: Tensor, target, init: str) -> tuple[Tensor, Tensor]:
    """``onehot(target) * logit`` (init=logit) or ``onehot(target)`` (init=one); target predicted by default."""
    flat = output.reshape(output.shape[0], -1)
    if flat.shape[1] == 0:
        raise InputError(f"the model output has shape {list(output.shape)}: no entries to explain")
    if target is None or target == "predicted":
        targets = flat.argmax(dim=1)
    else:
        targets = _targets(target, flat.shape[0], flat.shape[1], output.device)
    onehot = torch.zeros_like(flat)
    onehot[torch.arange(flat.shape[0]), targets] = 1.0
    if init == "logit":
        onehot = onehot * flat
    elif init != "one":
        raise ConfigError(f"init must be 'logit' or 'one', got {init!r}")
    return targets, onehot.reshape(output.shape)


def _targets(target, samples: int, classes: int, device) -> Tensor:
    """Explicit class indices: one for all samples or one per sample, each in ``0 .. classes - 1``."""
    if isinstance(target, int) and not isinstance(target, bool) and not 0 <= target < classes:
        raise InputError(
            f"target {target} is out of range for an output with {classes} entries (0..{classes - 1})"
        )
    values = [target] if isinstance(target, int) else target
    try:
        targets = torch.as_tensor(values, device=device).reshape(-1)
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        raise InputError(f"target must be a class index or one index per sample, got {target!r}") from exc
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise InputError(f"target must be an integer class index, got {target!r}")
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise InputError(
            f"target {int(bad[0])} is out of range for an output with {classes} entries (0..{classes - 1})"
        )
    targets = targets.long()
    if targets.numel() == 1:
        targets = targets.expand(samples)
    if targets.numel() != samples:
        raise InputError(f"{targets.numel()} targets given for {samples} samples")
    return targets


def propagate(
    graph: Graph,
    feeds: Mapping[str, Tensor],
    rules: RuleChoice,
    init: str = "logit",
    target=None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    values: dict[str, Tensor] | None = None,
    keep_relevance: dict[str, Tensor] | None = None,
    params: dict[str, dict] | None = None,
) -> Propagation:
    """Forward once (keeping activations), then send the output relevance back node by node, accounting for it.

    ``keep_relevance``, if given, receives the relevance that arrived at each node's output (by node id), and the
    result then keeps every activation in ``values`` (for self-verification and debugging). ``values``: the
    activations of a forward already run on these feeds (the forward check's); that dict is consumed (each
    activation is deleted from it once its node is done), so memory holds no more than without it.
    """
    check_batch_axis(graph)
    chosen = assign(graph, rules).complete().rules
    params = params if params is not None else cast_params(graph, dtype, device)
    values = run_forward(graph, feeds, dtype, device, params) if values is None else values
    output = values[graph.outputs[0]]
    targets, r_init = output_relevance(output, target, init)
    relevance: dict[str, Tensor] = {graph.outputs[0]: r_init}
    records: list[NodeRecord] = []
    graph_outputs = set(graph.outputs)
    with torch.no_grad():
        for node in reversed(graph.nodes):
            if keep_relevance is not None:
                keep_relevance[node.id] = relevance.get(node.output, torch.zeros_like(values[node.output]))
            try:
                records.append(_backward_node(node, chosen[node.id], values, relevance, params[node.id]))
            except ConfigError as exc:  # e.g. zbox bounds that do not fit: name the node
                raise ConfigError(f"node {node.id!r} ({chosen[node.id].describe()}): {exc}") from exc
            if keep_relevance is None and node.output not in graph_outputs:
                del values[node.output]  # its consumers are done: free the activation now
    records.reverse()
    inputs = {name: relevance.get(name, torch.zeros_like(values[name])) for name in graph.inputs}
    kept = values if keep_relevance is not None else None
    return Propagation(targets, r_init, inputs, records, output, list(graph.notes), kept)


def _backward_node(node: Node, rule: Rule, values, relevance, params) -> NodeRecord:
    z = values[node.output]
    r_out = relevance.pop(node.output, None)
    if r_out is None:
        r_out = torch.zeros_like(z)
    inputs = [values[name] for name in node.inputs]
    zeros = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    bias_share, stab_share, degenerate, softmax_share = zeros, zeros, zeros, zeros
    if not torch.any(r_out != 0):
        r_in = [torch.zeros_like(x) for x in inputs]
    elif node.op in LINEAR_TYPE or node.op in POOLS:
        view = linear_view(node, params, tuple(inputs[0].shape), z.dim())
        result = apply_linear_rule(rule, view, inputs[0], z, r_out)
        r_in = [result.r_in]
        bias_share, stab_share, degenerate = (
            result.absorbed_bias,
            result.absorbed_stabilizer,
            result.degenerate,
        )
    else:
        result = handler_for(rule)(node, inputs, z, r_out, rule, params)
        r_in = result.r_in
        bias_share = zeros if result.absorbed_bias is None else result.absorbed_bias
        stab_share = zeros if result.absorbed_stabilizer is None else result.absorbed_stabilizer
        degenerate = zeros if result.degenerate is None else result.degenerate
        softmax_share = zeros if result.absorbed_softmax is None else result.absorbed_softmax
    for name, r in zip(node.inputs, r_in):
        relevance[name] = relevance[name] + r if name in relevance else r
    return NodeRecord(
        node_id=node.id,
        node_name=node.origin.get("node_name"),
        op=node.op,
        rule=rule.describe(),
        bias_mode=rule.bias if RULES[rule.name].has_bias else "-",
        r_received=per_sample(r_out),
        r_passed=sum((per_sample(r) for r in r_in), zeros),
        absorbed_bias=bias_share,
        absorbed_stabilizer=stab_share,
        absorbed_softmax=softmax_share,
        degenerate=degenerate,
        scale=per_sample(r_out.abs()),
    )
