"""Baseline comparison (``check --baseline old.json``): fail only on regressions against an earlier JSON report.

Matching. Runs are matched by model path and configuration (the config file's path, else its name, else the run's
label); a run without an exact match is paired with the one unmatched baseline run that has the same model *file
name* and configuration (reports written from different checkouts or working folders). Within a pair, layer rows
are matched by node id and samples by (index, source). Unmatched layers and runs are listed as new or vanished:
they are information, not failures (an architecture change is what a baseline is often run against).

Regression rule. The figure compared is the one the current run's gate holds to the tolerance: ``rel_error``
under ``strict``, ``rel_residual`` under ``explained`` (for samples: the end-to-end ``rel_error`` or
``rel_unexplained``). A row regresses when

- its verdict got worse on the scale pass < fail < unexplained < non_finite, or
- its figure grew beyond the margin: ``new > max(old * (1 + margin), old + floor)``. The relative part
  (``margin``, default 0.5: the figure grew by more than half) ignores small drift of a real leak after a
  retrain; the absolute ``floor`` ignores growth that is rounding noise when ``old`` is at or near zero. The floor
  defaults to 1e-6 for float64 audits (rounding there is ~1e-16, and stabilizer shares at the default
  epsilon 1e-6 are ~1e-6 and below) and 1e-5 for float32 ones (sums over 1e3..1e4 terms at unit roundoff 6e-8);
  ``floor=`` overrides both. A figure that was finite and is now non-finite (``null``) regresses; null to null
  does not.

Samples are compared on their end-to-end figure only, and listed only for runs where no layer row regressed
(resp. improved): the end-to-end leak is the sum of the layer leaks, so a layer regression already explains it.
A run whose verdict went pass -> fail with no row or sample regression found is itself a regression (nothing is
let through unexplained). The reverse moves are listed as improvements; they never fail.

A baseline file that is not JSON, or not an lrpaudit report of a schema major version this tool reads, is an
:class:`~lrpaudit.errors.InputError` naming the file (exit 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..verdicts import gated_metric, severity
from ._format import fmt
from .json_report import read_report

DEFAULT_MARGIN = 0.5
DEFAULT_FLOOR = {"float64": 1e-6, "float32": 1e-5}
LIST_LIMIT = 20


def load_baseline(path) -> dict:
    """Read and validate a baseline report; any problem is an InputError that names the file."""
    return read_report(path, f"baseline {path}", "regenerate the baseline")


class LayerRef(NamedTuple):
    model: str
    config: str | None
    layer: str

    def __str__(self) -> str:
        config = f" [{self.config}]" if self.config else ""
        return f"{self.model}{config} {self.layer}"


@dataclass
class Change:
    """One row that moved between the baseline and now (a regression or an improvement)."""

    model: str
    config: str | None
    kind: str  # "layer" | "sample" | "run"
    item: str  # layer id, "sample 3 (source)", or "run"
    metric: str
    old: float | None
    new: float | None
    old_verdict: str | None
    new_verdict: str | None
    reason: str

    def describe(self) -> str:
        config = f" [{self.config}]" if self.config else ""
        return f"{self.model}{config} {self.item}: {self.reason}"

    def as_dict(self) -> dict:
        return {key: _json_number(value) for key, value in self.__dict__.items()}


@dataclass
class BaselineResult:
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    new_layers: list[LayerRef] = field(default_factory=list)
    vanished_layers: list[LayerRef] = field(default_factory=list)
    new_runs: list[str] = field(default_factory=list)
    vanished_runs: list[str] = field(default_factory=list)
    compared: int = 0
    margin: float = DEFAULT_MARGIN
    floor: float | None = None
    source: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def summary_line(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        against = f" against {self.source}" if self.source else ""
        return (
            f"{n(len(self.regressions), 'regression')}, {n(len(self.improvements), 'improvement')}, "
            f"{n(len(self.new_layers), 'new layer')}, {n(len(self.vanished_layers), 'vanished layer')} "
            f"(compared {self.compared} rows{against})"
        )

    def describe(self) -> list[str]:
        """Human lines: the summary, then every regression, then (capped) new/vanished layers and runs."""
        lines = [self.summary_line()]
        lines += [f"regression: {change.describe()}" for change in self.regressions]
        lines += [f"improvement: {change.describe()}" for change in self.improvements[:LIST_LIMIT]]
        for word, items in (
            ("new run", self.new_runs),
            ("vanished run", self.vanished_runs),
            ("new layer", self.new_layers),
            ("vanished layer", self.vanished_layers),
        ):
            lines += [f"{word}: {item}" for item in items[:LIST_LIMIT]]
            if len(items) > LIST_LIMIT:
                lines.append(f"... and {len(items) - LIST_LIMIT} more {word}s")
        return lines

    def as_dict(self) -> dict:
        """JSON-ready (for a report's optional ``baseline`` key)."""
        return {
            "source": self.source,
            "margin": self.margin,
            "floor": self.floor,
            "compared": self.compared,
            "failed": self.failed,
            "regressions": [change.as_dict() for change in self.regressions],
            "improvements": [change.as_dict() for change in self.improvements],
            "new_layers": [ref._asdict() for ref in self.new_layers],
            "vanished_layers": [ref._asdict() for ref in self.vanished_layers],
            "new_runs": list(self.new_runs),
            "vanished_runs": list(self.vanished_runs),
        }


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _config_key(run: dict) -> str | None:
    config = run.get("config") or {}
    return config.get("path") or config.get("name") or config.get("label")


def _run_name(run: dict) -> str:
    config = _config_key(run)
    return f"{run['model']['path']}" + (f" [{config}]" if config else "")


def _match_runs(now: list[dict], old: list[dict]) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    pairs: list[tuple[dict, dict]] = []
    free_old = list(old)
    unmatched_now = []
    for run in now:
        key = (run["model"]["path"], _config_key(run))
        found = next((o for o in free_old if (o["model"]["path"], _config_key(o)) == key), None)
        if found is None:
            unmatched_now.append(run)
        else:
            free_old.remove(found)
            pairs.append((run, found))
    still_new = []
    for run in unmatched_now:
        key = (Path(run["model"]["path"]).name, _config_key(run))
        candidates = [o for o in free_old if (Path(o["model"]["path"]).name, _config_key(o)) == key]
        if len(candidates) == 1:
            free_old.remove(candidates[0])
            pairs.append((run, candidates[0]))
        else:
            still_new.append(run)
    return pairs, still_new, free_old


def _figure(value) -> float:
    """null (a non-finite figure in the report) compares as +inf."""
    return math.inf if value is None else float(value)


def _compare_row(
    run: dict, item: str, kind: str, metric: str, new: dict, old: dict, margin: float, floor: float
) -> tuple[Change | None, Change | None]:
    """(regression, improvement) of one matched row; at most one of them is set."""
    new_value, old_value = new.get(metric), old.get(metric)
    new_fig, old_fig = _figure(new_value), _figure(old_value)
    new_verdict, old_verdict = new.get("verdict"), old.get("verdict")
    reasons = []
    worse_verdict = severity(new_verdict) > severity(old_verdict)
    better_verdict = severity(new_verdict) < severity(old_verdict)
    if worse_verdict:
        reasons.append(f"verdict {old_verdict} -> {new_verdict}")
    threshold = max(old_fig * (1 + margin), old_fig + floor)
    grew = new_fig > threshold if math.isfinite(old_fig) else False
    if grew:
        limit = f"> max({1 + margin:g}x, +{floor:g})"
        reasons.append(f"{metric} {_shown(old_value)} -> {_shown(new_value)} ({limit})")
    model, config = run["model"]["path"], _config_key(run)

    def change(reason: str) -> Change:
        return Change(
            model, config, kind, item, metric, old_value, new_value, old_verdict, new_verdict, reason
        )

    if reasons:
        return change("; ".join(reasons)), None
    shrank = old_fig > max(new_fig * (1 + margin), new_fig + floor) if math.isfinite(new_fig) else False
    if better_verdict or shrank:
        parts = [f"verdict {old_verdict} -> {new_verdict}"] if better_verdict else []
        if shrank:
            parts.append(f"{metric} {_shown(old_value)} -> {_shown(new_value)}")
        return None, change("; ".join(parts))
    return None, None


def compare(
    report_now: dict, baseline, margin: float = DEFAULT_MARGIN, floor: float | None = None
) -> BaselineResult:
    """Compare a report with a baseline (a report dict from :func:`load_baseline`, or a path to load).

    ``margin`` is the relative growth allowed, ``floor`` the absolute one (default per dtype, see the module).
    """
    source = None
    if isinstance(baseline, (str, Path)):
        source = str(baseline)
        baseline = load_baseline(baseline)
    result = BaselineResult(margin=margin, floor=floor, source=source)
    pairs, new_runs, old_runs = _match_runs(report_now.get("runs", []), baseline.get("runs", []))
    result.new_runs = [_run_name(run) for run in new_runs]
    result.vanished_runs = [_run_name(run) for run in old_runs]
    for now, old in pairs:
        gate = (now.get("tolerance") or {}).get("gate", "strict")
        metric = gated_metric(gate)
        row_floor = (
            floor if floor is not None else DEFAULT_FLOOR.get(now.get("dtype"), DEFAULT_FLOOR["float64"])
        )
        model, config = now["model"]["path"], _config_key(now)
        old_layers = {row["id"]: row for row in old.get("layers", [])}
        now_ids = set()
        before = len(result.regressions)
        for row in now.get("layers", []):
            now_ids.add(row["id"])
            if row["id"] not in old_layers:
                result.new_layers.append(LayerRef(model, config, row["id"]))
                continue
            result.compared += 1
            worse, better = _compare_row(
                now, row["id"], "layer", metric, row, old_layers[row["id"]], margin, row_floor
            )
            if worse:
                result.regressions.append(worse)
            if better:
                result.improvements.append(better)
        result.vanished_layers += [
            LayerRef(model, config, layer_id) for layer_id in old_layers if layer_id not in now_ids
        ]
        layer_regressions = len(result.regressions) > before
        layer_improvements = any(c.model == model and c.config == config for c in result.improvements)
        sample_metric = "rel_unexplained" if gate == "explained" else "rel_error"
        old_samples = {(s["index"], s["source"]): s for s in old.get("samples", [])}
        for sample in now.get("samples", []):
            previous = old_samples.get((sample["index"], sample["source"]))
            if previous is None or sample_metric not in sample or sample_metric not in previous:
                continue
            result.compared += 1
            item = f"sample {sample['index']} ({sample['source']})"
            # samples: the end-to-end figure only; their verdicts follow the layer rows compared above
            figures_now = {sample_metric: sample[sample_metric], "verdict": "pass"}
            figures_old = {sample_metric: previous[sample_metric], "verdict": "pass"}
            worse, better = _compare_row(
                now, item, "sample", sample_metric, figures_now, figures_old, margin, row_floor
            )
            if worse and not layer_regressions:
                worse.old_verdict, worse.new_verdict = previous.get("verdict"), sample.get("verdict")
                result.regressions.append(worse)
            if better and not layer_improvements:
                better.old_verdict, better.new_verdict = previous.get("verdict"), sample.get("verdict")
                result.improvements.append(better)
        if len(result.regressions) == before and severity(now.get("verdict")) > severity(old.get("verdict")):
            result.regressions.append(
                Change(
                    model,
                    config,
                    "run",
                    "run",
                    "verdict",
                    None,
                    None,
                    old.get("verdict"),
                    now.get("verdict"),
                    f"run verdict {old.get('verdict')} -> {now.get('verdict')}",
                )
            )
    return result


def _shown(value) -> str:
    return fmt(value, missing="non-finite")


def attach(report: dict, baseline: dict | None, source) -> BaselineResult | None:
    """Compare ``report`` with a loaded ``baseline`` (None: no baseline) and record the comparison in it."""
    if baseline is None:
        return None
    regressions = compare(report, baseline)
    regressions.source = str(source)
    report["baseline"] = regressions.as_dict()
    return regressions
