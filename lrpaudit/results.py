"""The result of an audit, computed once: per-node, per-sample figures gathered batch by batch, then frozen.

``AuditAccumulator`` collects the per-node records of each propagated batch as plain float64 arrays (nothing of
torch is kept). ``finalize`` turns them, with the tolerance, into immutable :class:`LayerAudit` and
:class:`SampleAudit` objects whose verdicts are decided once, vectorized over samples; every report reads these.
``finalize`` is a pure function of plain data, so results rebuilt from JSON report fragments (sharded audits)
finalize to the same figures and verdicts. A sharded audit's result carries a :class:`ShardRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property

import numpy as np

from .errors import InputError
from .verdicts import (
    CATEGORIES,
    EXPLAINED_CATEGORIES,
    ROW_FIELDS,
    SEVERITY,
    UNEXPLAINED_BOUND,
    VERDICTS,
    Row,
    Tolerance,
    combine,
    gated_metric,
    make_row,
    relative,
    sample_hint,
    sample_verdict,
)

META_KEYS = ("id", "node_name", "op", "rule", "rule_source", "bias_mode")


@dataclass(frozen=True)
class SampleAudit:
    """End-to-end figures for one sample and its verdict."""

    index: int
    source: str
    target: int
    r_output: float
    r_input: float
    r_input_by_name: Mapping[str, float]
    output_scale: float
    totals: Mapping[str, float]
    verdict: str = "pass"
    # The largest cancellation (sum |R| / |sum R|) over the sample's nodes and where (None: none defined), and why
    # the sample fails end to end when all its layers pass ("" otherwise).
    max_cancellation: float | None = None
    max_cancellation_layer: str | None = None
    hint: str = ""

    @property
    def leak(self) -> float:
        return self.r_output - self.r_input

    @property
    def nothing_to_explain(self) -> bool:
        """The output relevance is exactly zero: rel_error is then the absolute leak (see api)."""
        return self.output_scale == 0

    @property
    def rel_error(self) -> float:
        return relative(self.leak, self.output_scale)

    @property
    def rel_unexplained(self) -> float:
        accounted = sum(self.totals[key] for key in EXPLAINED_CATEGORIES)
        return relative(self.leak - accounted, self.output_scale)

    def end_to_end(self, gate: str) -> float:
        """The end-to-end figure the gate holds to ``end_to_end_rtol``."""
        return self.rel_unexplained if gate == "explained" else self.rel_error


@dataclass(frozen=True)
class LayerAudit:
    """One node's figures over all samples (float64 arrays by row field), its verdicts and its aggregated row."""

    meta: Mapping[str, str | None]  # META_KEYS: id, node_name, op, rule, rule_source, bias_mode
    tolerance: float
    gate: str
    values: Mapping[str, np.ndarray]
    verdicts: tuple[str, ...]
    aggregate: Row

    @property
    def node_id(self) -> str:
        return self.meta["id"]

    @property
    def op(self) -> str:
        return self.meta["op"]

    @property
    def rule(self) -> str:
        return self.meta["rule"]

    @property
    def bias_mode(self) -> str:
        return self.meta["bias_mode"]

    @cached_property
    def sample_rows(self) -> tuple[Row, ...]:
        """The node's row for every sample, in sample order (built on first use, then kept)."""
        return tuple(self._row(position, self.verdicts[position]) for position in range(len(self.verdicts)))

    def _row(self, position: int, verdict: str, **extra) -> Row:
        figures = {key: float(self.values[key][position]) for key in ROW_FIELDS}
        return make_row(self.meta, figures, self.tolerance, self.gate, verdict, **extra)


@dataclass(frozen=True)
class ShardRecord:
    """Which slice of an input set a sharded audit covered, and what its shards must share to be merged.

    ``index`` of ``count`` (batch ``b`` belongs to shard ``b mod count + 1``); ``total_samples`` in the whole input
    set; the ``batch_size`` that formed the batches; ``inputs`` names the input set (a path, or the random draw);
    ``target`` the request's target (``None``: the config's); ``allow_empty`` whether an audit that checks nothing
    is accepted (decided when the shards are merged: one shard alone cannot tell).
    """

    index: int
    count: int
    total_samples: int
    batch_size: int
    inputs: str
    target: str | int | None
    allow_empty: bool


@dataclass(frozen=True)
class AuditResult:
    """Everything one audit of one model with one configuration found; immutable."""

    model_path: str
    model_format: str
    model_sha256: str
    dtype: str
    device: str
    tolerance: Tolerance
    layers: tuple[LayerAudit, ...]
    samples: tuple[SampleAudit, ...]
    fidelity: object | None  # a fidelity.FidelityResult
    notes: tuple[str, ...] = ()
    rule_checks: tuple | None = None  # verify.RuleCheck per checked node
    relevance: dict[str, np.ndarray] | None = None
    inputs: dict[str, np.ndarray] | None = None  # the audited input arrays, when kept (heatmap overlays)
    token_inputs: tuple[str, ...] = ()  # inputs of token ids: their relevance is per token, (samples, tokens)
    config: Mapping = field(default_factory=dict)
    elapsed_s: float | None = None  # wall-clock seconds of the audit (load excluded); JUnit/JSON timings
    warnings: tuple[str, ...] = ()
    shard: ShardRecord | None = None  # set on the result of one shard of a sharded audit
    # a fidelity.FidelityCoverage: which batches the forward check compared
    fidelity_compared: object | None = None

    @property
    def bound(self) -> float:
        return UNEXPLAINED_BOUND[self.dtype]

    def layer_rows(self) -> list[Row]:
        """One row per node, aggregated over samples (the worst sample's figures)."""
        return [layer.aggregate for layer in self.layers]

    def sample_layer_rows(self, position: int) -> list[Row]:
        """The per-node rows of the ``position``-th sample."""
        return [layer.sample_rows[position] for layer in self.layers]

    def layer_data(self) -> list[tuple[dict[str, str], dict[str, np.ndarray]]]:
        """Each node's description and per-sample figures, as fresh copies (for :func:`refinalize`)."""
        return [(dict(layer.meta), {k: v.copy() for k, v in layer.values.items()}) for layer in self.layers]

    def raw_samples(self) -> list[RawSample]:
        """The samples' end-to-end figures without their verdicts (for :func:`refinalize`)."""
        names = [f.name for f in fields(RawSample)]
        return [RawSample(**{k: getattr(s, k) for k in names}) for s in self.samples]

    @cached_property
    def verdict(self) -> str:
        failed = any(layer.aggregate.verdict != "pass" for layer in self.layers)
        failed = failed or any(sample.verdict != "pass" for sample in self.samples)
        return "fail" if failed else "pass"


@dataclass(frozen=True)
class RawSample:
    """A sample's end-to-end figures before its verdict is decided."""

    index: int
    source: str
    target: int
    r_output: float
    r_input: float
    r_input_by_name: Mapping[str, float]
    output_scale: float
    totals: Mapping[str, float]


class AuditAccumulator:
    """Collects per-node records and per-sample figures over the batches of one audit, as float64 numbers."""

    def __init__(self) -> None:
        self.meta: dict[str, dict[str, str]] = {}
        self.values: dict[str, dict[str, list[float]]] = {}
        self.samples: list[RawSample] = []

    def add_records(self, records, sources: Mapping[str, str]) -> None:
        """One batch's NodeRecords (per-sample tensors), in graph order; ``sources`` names each rule's origin."""
        for record in records:
            if record.node_id not in self.meta:
                self.meta[record.node_id] = {
                    "id": record.node_id,
                    "node_name": record.node_name,
                    "op": record.op,
                    "rule": record.rule,
                    "rule_source": sources.get(record.node_id, "default"),
                    "bias_mode": record.bias_mode,
                }
                self.values[record.node_id] = {key: [] for key in ROW_FIELDS}
            columns = self.values[record.node_id]
            for key in ROW_FIELDS:
                columns[key].extend(getattr(record, key).detach().cpu().double().tolist())

    def add_samples(self, propagation, sources: Sequence[str], first_index: int) -> None:
        """One batch's end-to-end figures (from a propagate.Propagation)."""
        totals = {key: propagation.total(key).detach().cpu().double().tolist() for key in CATEGORIES}
        by_name = {
            name: r.reshape(r.shape[0], -1).sum(1).double().tolist()
            for name, r in propagation.input_relevance.items()
        }
        r_out = propagation.r_output.double().tolist()
        r_in = propagation.r_input.double().tolist()
        scale = propagation.output_scale.double().tolist()
        targets = propagation.targets.tolist()
        for i, source in enumerate(sources):
            self.samples.append(
                RawSample(
                    index=first_index + i,
                    source=source,
                    target=int(targets[i]),
                    r_output=r_out[i],
                    r_input=r_in[i],
                    r_input_by_name={name: values[i] for name, values in by_name.items()},
                    output_scale=scale[i],
                    totals={key: values[i] for key, values in totals.items()},
                )
            )

    def layer_data(self) -> list[tuple[dict[str, str], dict[str, np.ndarray]]]:
        return [
            (
                self.meta[node_id],
                {key: np.asarray(column, dtype=np.float64) for key, column in columns.items()},
            )
            for node_id, columns in self.values.items()
        ]


def finalize(
    layer_data: Sequence[tuple[Mapping[str, str], Mapping[str, np.ndarray]]],
    samples: Sequence[RawSample],
    tolerance: Tolerance,
    dtype: str,
) -> tuple[tuple[LayerAudit, ...], tuple[SampleAudit, ...]]:
    """Decide every verdict once: per node and sample, per node over samples, per sample end to end."""
    bound = UNEXPLAINED_BOUND[dtype]
    gate = tolerance.gate
    codes = np.zeros((len(layer_data), len(samples)), dtype=np.int8)
    layers = []
    for k, (meta, values) in enumerate(layer_data):
        node_tolerance = tolerance.for_node(meta["id"])
        codes[k] = _verdict_codes(values, node_tolerance, gate, bound)
        verdicts = tuple(VERDICTS[code] for code in codes[k])
        layers.append(_layer(meta, values, node_tolerance, gate, verdicts))
    worst_layer = codes.max(axis=0) if len(layer_data) else np.zeros(len(samples), dtype=np.int8)
    peaks, peak_at = _max_cancellation(layer_data, len(samples))
    finals = []
    for position, raw in enumerate(samples):
        undecided = SampleAudit(**vars(raw))
        layer_verdict = VERDICTS[worst_layer[position]]
        end_to_end = undecided.end_to_end(gate)
        verdict = sample_verdict(end_to_end, layer_verdict, tolerance.end_to_end_rtol)
        peak = None if peak_at[position] < 0 else float(peaks[position])
        where = None if peak is None else layer_data[peak_at[position]][0]["id"]
        hint = ""
        if verdict == "fail" and layer_verdict == "pass":
            hint = sample_hint(
                end_to_end, tolerance.end_to_end_rtol, raw.totals, raw.output_scale, peak, where
            )
        finals.append(
            SampleAudit(
                **vars(raw), verdict=verdict, max_cancellation=peak, max_cancellation_layer=where, hint=hint
            )
        )
    return tuple(layers), tuple(finals)


def _max_cancellation(layer_data, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the largest ``scale / |r_received|`` over the nodes (``verdicts.cancellation``) and the node's
    position in ``layer_data`` (-1 where no node has one)."""
    peaks, at = np.zeros(count), np.full(count, -1)
    for k, (_, values) in enumerate(layer_data):
        received, scale = np.abs(values["r_received"]), values["scale"]
        defined = (received > 0) & np.isfinite(received) & np.isfinite(scale)
        with np.errstate(over="ignore"):
            ratio = np.where(defined, scale / np.where(defined, received, 1.0), -np.inf)
        defined &= np.isfinite(ratio)
        better = defined & ((at < 0) | (ratio > peaks))
        peaks, at = np.where(better, ratio, peaks), np.where(better, k, at)
    return peaks, at


def _verdict_codes(values: Mapping[str, np.ndarray], tolerance: float, gate: str, bound: float) -> np.ndarray:
    """Per-sample verdict codes (indices into VERDICTS) of one node, as :func:`verdicts.row_verdict` decides."""
    finite = np.logical_and.reduce([np.isfinite(values[key]) for key in ROW_FIELDS])
    codes = np.where(values[gated_metric(gate)] > tolerance, SEVERITY["fail"], SEVERITY["pass"])
    codes = np.where(values["rel_residual"] > bound, SEVERITY["unexplained"], codes)
    return np.where(finite, codes, SEVERITY["non_finite"]).astype(np.int8)


def _layer(meta, values, tolerance: float, gate: str, verdicts: tuple[str, ...]) -> LayerAudit:
    """The layer with its aggregated row: the worst sample's figures, the combined verdict of all samples."""
    metric = values[gated_metric(gate)]
    if metric.size:
        worst = int(np.argmax(np.where(np.isfinite(metric), metric, np.inf)))
        figures = {key: float(values[key][worst]) for key in ROW_FIELDS}
    else:
        worst, figures = 0, dict.fromkeys(ROW_FIELDS, 0.0)
    verdict = combine(verdicts)
    failing = sum(v != "pass" for v in verdicts)
    aggregate = make_row(meta, figures, tolerance, gate, verdict, worst_sample=worst, failing_samples=failing)
    return LayerAudit(dict(meta), tolerance, gate, dict(values), verdicts, aggregate)


def refinalize(result: AuditResult, layer_data=None, samples=None) -> AuditResult:
    """``result`` with other node descriptions, figures or samples, every verdict decided again."""
    layer_data = result.layer_data() if layer_data is None else layer_data
    samples = result.raw_samples() if samples is None else samples
    layers, finals = finalize(layer_data, samples, result.tolerance, result.dtype)
    return replace(result, layers=layers, samples=finals)


def sample_notes(samples, has_layers: bool) -> list[str]:
    """The notes a run's samples call for: none at all, some with nothing to explain, a graph with no layers.

    A pure function of the samples, so that merged shards (:mod:`lrpaudit.merge`) recompute exactly these notes.
    """
    if not samples:
        return ["the audit checked nothing: no samples"]
    notes = []
    empty = [sample.index for sample in samples if sample.nothing_to_explain]
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        notes.append(
            f"{len(empty)} of {len(samples)} samples have nothing to explain (the explained output is exactly "
            f"0): their checks are vacuous (samples {shown})"
        )
    if not has_layers:
        notes.append("the audit checked nothing: the graph has no layers (its output is its input)")
    return notes


def check_not_vacuous(model_path: str, samples, inputs: str, allow_empty: bool) -> None:
    """An InputError if the audit checked nothing (no samples, or none with anything to explain), unless
    ``allow_empty``.

    Decision: a sample whose output relevance is exactly zero (``init: logit`` and a target logit of exactly 0)
    has nothing to explain. It is never divided by zero: its ``rel_error`` is the absolute leak (so relevance
    created from nothing still fails), it is flagged ``nothing_to_explain`` in the JSON report, and a note lists
    it (:func:`sample_notes`). If no sample has anything to explain, the audit checked nothing.
    """
    if allow_empty:
        return
    where = f" {inputs}" if inputs else ""
    if not samples:
        raise InputError(
            f"{model_path}: the audit checked nothing: the inputs{where} hold no samples; "
            "pass --allow-empty to accept an empty audit"
        )
    if all(sample.nothing_to_explain for sample in samples):
        raise InputError(
            f"{model_path}: the audit checked nothing: the explained output is exactly 0 for all {len(samples)} "
            "samples (no relevance to explain); use init: one or another --target, or pass --allow-empty"
        )
