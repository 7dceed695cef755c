"""Report fragments: a JSON report's run rebuilt into the :class:`~lrpaudit.results.AuditResult` that wrote it.

A report's samples carry their per-node rows with every figure at full precision (JSON floats round-trip
exactly), so the per-node, per-sample float64 arrays and the samples' end-to-end figures are recovered as they
were, and :func:`lrpaudit.results.finalize` decides every verdict and aggregate again, the same way. That is what
makes ``lrpaudit merge`` exact, and lets JUnit and Markdown be rendered from a merged report by the usual writers.

What does not come back: a ``null`` figure (non-finite) returns as NaN whether it was NaN or inf (every report
writes both as ``null`` with the same verdict, so the rebuilt report is the same); rule-assignment warnings and
relevance maps are not in reports. A run whose rows do not line up is a :class:`FragmentError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .errors import InputError
from .fidelity import FidelityCoverage, FidelityResult
from .results import META_KEYS, AuditResult, RawSample, ShardRecord, finalize
from .verdicts import CATEGORIES, ROW_FIELDS, Tolerance
from .verify import RuleCheck


class FragmentError(InputError):
    """A report's run cannot be rebuilt (its per-sample rows do not match its layers)."""


def _number(value) -> float:
    """A report figure as a float; ``null`` (a non-finite figure) as NaN."""
    return math.nan if value is None else float(value)


def result_from_run(run: Mapping) -> AuditResult:
    """The AuditResult of one ``runs[]`` entry of a (schema-valid) report, verdicts decided again."""
    metas = [{key: row[key] for key in META_KEYS} for row in run["layers"]]
    ids = [meta["id"] for meta in metas]
    columns: dict[str, dict[str, list[float]]] = {node: {key: [] for key in ROW_FIELDS} for node in ids}
    samples = []
    for sample in run["samples"]:
        if [row["id"] for row in sample["layers"]] != ids:
            raise FragmentError(
                f"sample {sample['index']}: its layer rows do not match the run's layers (a damaged report)"
            )
        for row in sample["layers"]:
            for key in ROW_FIELDS:
                columns[row["id"]][key].append(_number(row[key]))
        samples.append(
            RawSample(
                index=int(sample["index"]),
                source=sample["source"],
                target=int(sample["target"]),
                r_output=_number(sample["r_output"]),
                r_input=_number(sample["r_input"]),
                r_input_by_name={k: _number(v) for k, v in sample["r_input_by_name"].items()},
                output_scale=_number(sample["output_scale"]),
                totals={key: _number(sample["totals"].get(key)) for key in CATEGORIES},
            )
        )
    node_tolerance = {row["id"]: _number(row["tolerance"]) for row in run["layers"]}
    recorded = run["tolerance"]
    tolerance = Tolerance(
        gate=recorded["gate"],
        layer_rtol=_number(recorded["layer_rtol"]),
        end_to_end_rtol=_number(recorded["end_to_end_rtol"]),
        node_rtol=node_tolerance.get,
    )
    layer_data = [
        (meta, {key: np.asarray(column, dtype=np.float64) for key, column in columns[meta["id"]].items()})
        for meta in metas
    ]
    layers, finals = finalize(layer_data, samples, tolerance, run["dtype"])
    return AuditResult(
        model_path=run["model"]["path"],
        model_format=run["model"]["format"],
        model_sha256=run["model"]["sha256"],
        dtype=run["dtype"],
        device=run["device"],
        tolerance=tolerance,
        layers=layers,
        samples=finals,
        fidelity=_fidelity(run["fidelity"]),
        fidelity_compared=_compared(run["fidelity"]),
        notes=tuple(run["notes"]),
        rule_checks=_rule_checks(run["rule_checks"]),
        config=_config(run["config"]),
        elapsed_s=run.get("elapsed_s"),
        shard=ShardRecord(**{key: run["shard"][key] for key in SHARD_KEYS}) if run.get("shard") else None,
    )


SHARD_KEYS = ("index", "count", "total_samples", "batch_size", "inputs", "target", "allow_empty")


def _fidelity(record: Mapping) -> FidelityResult | None:
    if not record.get("checked"):
        return None
    return FidelityResult(
        reference=record["reference"],
        dtype=record["dtype"],
        max_abs_diff=_number(record["max_abs_diff"]),
        max_rel_diff=_number(record["max_rel_diff"]),
        tolerance=_number(record["tolerance"]),
        passed=record["passed"],
        first_diverging=record["first_diverging"],
    )


def _compared(record: Mapping) -> FidelityCoverage | None:
    """What the forward check compared (schema 1.2); None for an older report, which does not say."""
    if record.get("mode") is None:
        return None
    return FidelityCoverage(
        mode=record["mode"],
        seed=int(record["seed"]),
        batches=tuple(int(b) for b in record.get("batches", ())),
        samples=int(record.get("samples", 0)),
    )


def _rule_checks(records) -> tuple[RuleCheck, ...] | None:
    if records is None:
        return None
    return tuple(
        RuleCheck(
            node_id=record["node_id"],
            rule=record["rule"],
            max_abs_dev=_number(record["max_abs_dev"]),
            scale=_number(record["scale"]),
            units_checked=int(record["units_checked"]),
            units_total=int(record["units_total"]),
        )
        for record in records
    )


def _config(record: Mapping) -> dict:
    """The result's config record; empty for rules given in code (which the report writes as all nulls)."""
    config = {key: record.get(key) for key in ("name", "path", "sha256", "resolved")}
    return {} if all(value is None for value in config.values()) else config
