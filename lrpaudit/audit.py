"""Tolerances, verdicts and aggregation of the per-node, per-sample accounting over a whole input set.

Gates (DESIGN section 6):
- ``strict``: a node passes if ``rel_error <= layer_rtol``; a sample passes end to end if its ``rel_error <=
  end_to_end_rtol``.
- ``explained``: only the unexplained part is held to the tolerances (``rel_residual`` per node; per sample the
  end-to-end leak minus every accounted share).
In both gates a ``rel_residual`` above the dtype's rounding bound fails as *unexplained*, and a non-finite number
fails as *non_finite*.

Rounding bound. Each node's residual is ``sum_j g_j Z_j - sum_i R_i`` with ``g = R / D``: two sums of the same
products in different orders. Their difference is bounded by about ``n u sum_ij |Z_ij g_j|`` (``u`` the unit
roundoff, ``n`` the terms per sum), and ``sum |Z g| / sum |R|`` is the cancellation ratio, up to ``|Z| / |D|``,
which the stabilizer caps at about ``|Z| / eps``. With ``u = 1.1e-16`` (float64) and ``6e-8`` (float32), fan-ins up
to ~1e4 and a cancellation ratio up to ~1e3, the bounds are ``1e-9`` (float64) and ``1e-4`` (float32). Observed
residuals on the test nets are ~1e-16 and ~1e-7.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .propagate import NodeRecord, Propagation

UNEXPLAINED_BOUND = {"float64": 1e-9, "float32": 1e-4}
ROW_FIELDS = (
    "r_received",
    "r_passed",
    "leak",
    "absorbed_bias",
    "absorbed_stabilizer",
    "degenerate",
    "residual",
    "rel_error",
    "rel_residual",
    "scale",
)
CATEGORIES = ("absorbed_bias", "absorbed_stabilizer", "degenerate", "residual")
CATEGORY_WORDS = {
    "absorbed_bias": "bias",
    "absorbed_stabilizer": "stabilizer",
    "degenerate": "degenerate units",
    "residual": "unexplained residual",
}


@dataclass
class Tolerance:
    """The conservation gate; ``node_rtol(node_id)`` gives per-node overrides of ``layer_rtol``."""

    gate: str = "strict"
    layer_rtol: float = 1e-4
    end_to_end_rtol: float = 1e-3
    node_rtol: Callable[[str], float | None] | None = None

    def for_node(self, node_id: str) -> float:
        if self.node_rtol is not None:
            override = self.node_rtol(node_id)
            if override is not None:
                return override
        return self.layer_rtol


@dataclass
class LayerAudit:
    """One node's accounting over all samples (arrays of shape ``(n_samples,)``) and its verdicts."""

    node_id: str
    op: str
    rule: str
    rule_source: str
    bias_mode: str
    tolerance: float
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ROW_FIELDS})

    def add(self, record: NodeRecord) -> None:
        for key in ROW_FIELDS:
            self.values[key].extend(getattr(record, key).detach().cpu().double().tolist())

    def array(self, key: str) -> np.ndarray:
        return np.asarray(self.values[key], dtype=np.float64)

    def sample_row(self, index: int, gate: str, bound: float) -> dict:
        row = {key: self.values[key][index] for key in ROW_FIELDS}
        return self._row(row, gate, bound)

    def worst_index(self, gate: str) -> int:
        """The sample with the largest gated metric (NaN counts as worst)."""
        metric = self.array("rel_residual" if gate == "explained" else "rel_error")
        if metric.size == 0:
            return 0
        metric = np.where(np.isfinite(metric), metric, np.inf)
        return int(np.argmax(metric))

    def aggregate_row(self, gate: str, bound: float) -> dict:
        """The worst sample's row; ``passing_tolerance`` is the tolerance that would have passed every sample."""
        index = self.worst_index(gate)
        row = self.sample_row(index, gate, bound) if self.values["rel_error"] else self._row({}, gate, bound)
        row["worst_sample"] = index
        verdicts = [self.sample_row(i, gate, bound)["verdict"] for i in range(len(self.values["rel_error"]))]
        row["verdict"] = _combine(verdicts)
        row["failing_samples"] = sum(v != "pass" for v in verdicts)
        return row

    def _row(self, values: dict, gate: str, bound: float) -> dict:
        row = {"id": self.node_id, "op": self.op, "rule": self.rule, "rule_source": self.rule_source}
        row["bias_mode"] = self.bias_mode
        row.update({key: values.get(key, 0.0) for key in ROW_FIELDS})
        row["tolerance"] = self.tolerance
        metric = row["rel_residual"] if gate == "explained" else row["rel_error"]
        finite = all(math.isfinite(row[key]) for key in ROW_FIELDS)
        if not finite:
            verdict = "non_finite"
        elif row["rel_residual"] > bound:
            verdict = "unexplained"
        elif metric > self.tolerance:
            verdict = "fail"
        else:
            verdict = "pass"
        row["verdict"] = verdict
        row["passing_tolerance"] = metric if finite else None
        row["largest_category"] = largest_category(row)
        row["hint"] = fix_hint(row) if verdict != "pass" else ""
        return row


def largest_category(row: dict) -> str | None:
    """Which accounted share dominates the leak (None when nothing leaked)."""
    shares = {key: abs(row[key]) for key in CATEGORIES if math.isfinite(row[key])}
    if not shares or max(shares.values()) == 0.0:
        return None
    return max(shares, key=shares.get)


def category_share(row: dict) -> float:
    """The largest category's share of the relevance the node received, in percent (0 when none)."""
    category, scale = row.get("largest_category"), row.get("scale") or 0.0
    return abs(row[category]) / scale * 100 if category and scale else 0.0


def fix_hint(row: dict) -> str:
    """A one-line suggestion for a failing row, naming the dominant category."""
    if row["verdict"] == "non_finite":
        return (
            f"NaN/Inf at {row['id']} under {row['rule']}, from non-finite weights or activations in the model "
            "or a zero denominator (use a stabilizer, epsilon > 0)"
        )
    category = row["largest_category"]
    share = category_share(row)
    where = f"at {row['id']} under {row['rule']}"
    tol = row["passing_tolerance"]
    raise_tol = f"or raise the tolerance to {round_up(tol)}" if tol is not None else ""
    if row["verdict"] == "unexplained" or category == "residual":
        return (
            f"unexplained residual {share:.3g}% {where}: a rule, graph or numerics fault; run --verify-rules"
        )
    if category == "absorbed_bias":
        return f"bias absorbs {share:.3g}% {where}: bias: ignore or distribute conserves, {raise_tol}"
    if category == "absorbed_stabilizer":
        return f"stabilizer absorbs {share:.3g}% {where}: lower epsilon/stabilizer, {raise_tol}"
    if category == "degenerate":
        return f"degenerate units take {share:.3g}% {where}: units with nothing to carry (dead or one-signed), {raise_tol}"
    return raise_tol


def round_up(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant digits, rounded up so the printed tolerance really passes."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(value)) - digits + 1
    step = 10.0**exponent
    rounded = math.ceil(value / step - 1e-9) * step
    if rounded < value * (1 - 1e-12):
        rounded += step
    return f"{rounded:.{max(0, -exponent)}f}" if -4 <= exponent < 0 else f"{rounded:.{digits - 1}e}"


def _combine(verdicts: list[str]) -> str:
    for worst in ("non_finite", "unexplained", "fail"):
        if worst in verdicts:
            return worst
    return "pass"


@dataclass
class SampleAudit:
    """End-to-end figures for one sample."""

    index: int
    source: str
    target: int
    r_output: float
    r_input: float
    r_input_by_name: dict[str, float]
    output_scale: float
    totals: dict[str, float]
    verdict: str = "pass"

    @property
    def leak(self) -> float:
        return self.r_output - self.r_input

    @property
    def nothing_to_explain(self) -> bool:
        """The output relevance is exactly zero: rel_error is then the absolute leak (see api._nothing_to_explain)."""
        return self.output_scale == 0

    @property
    def rel_error(self) -> float:
        return abs(self.leak) / self.output_scale if self.output_scale > 0 else abs(self.leak)

    @property
    def rel_unexplained(self) -> float:
        accounted = sum(self.totals[k] for k in ("absorbed_bias", "absorbed_stabilizer", "degenerate"))
        unexplained = self.leak - accounted
        return abs(unexplained) / self.output_scale if self.output_scale > 0 else abs(unexplained)


def samples_from(propagation: Propagation, sources: list[str], first_index: int) -> list[SampleAudit]:
    """Per-sample end-to-end figures of one propagated batch."""
    totals = {key: propagation.total(key).detach().cpu().double().tolist() for key in CATEGORIES}
    r_in_by_name = {
        k: v.reshape(v.shape[0], -1).sum(1).double().tolist() for k, v in propagation.input_relevance.items()
    }
    r_out = propagation.r_output.double().tolist()
    r_in = propagation.r_input.double().tolist()
    scale = propagation.output_scale.double().tolist()
    targets = propagation.targets.tolist()
    return [
        SampleAudit(
            index=first_index + i,
            source=sources[i],
            target=int(targets[i]),
            r_output=r_out[i],
            r_input=r_in[i],
            r_input_by_name={k: v[i] for k, v in r_in_by_name.items()},
            output_scale=scale[i],
            totals={k: v[i] for k, v in totals.items()},
        )
        for i in range(len(sources))
    ]


def sample_verdict(sample: SampleAudit, layer_verdicts: list[str], tolerance: Tolerance) -> str:
    """A sample fails if any of its layer rows fails or its end-to-end figure is beyond tolerance."""
    metric = sample.rel_unexplained if tolerance.gate == "explained" else sample.rel_error
    if not math.isfinite(metric):
        return "non_finite"
    worst_layer = _combine(layer_verdicts)
    if worst_layer != "pass":
        return worst_layer
    return "fail" if metric > tolerance.end_to_end_rtol else "pass"
