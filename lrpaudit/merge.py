"""Merging the shards of a sharded audit into the result one unsharded audit gives (``lrpaudit merge``, batch).

Per-node audit figures are kept per sample, so merging is exact and independent of order: the shards' per-node,
per-sample arrays and samples are put back in global sample order and :func:`lrpaudit.results.finalize` decides
every verdict, aggregate (worst sample, failing samples, passing tolerance) and end-to-end figure once, as for an
unsharded audit. The rest is combined as the unsharded audit computes it:

- notes: the graph's notes of the shard that holds the last batch (an audit reports its last batch's), then the
  notes on the samples (:func:`lrpaudit.results.sample_notes`) recomputed over all samples;
- forward fidelity: the largest deviation of any shard (:func:`lrpaudit.fidelity.worse_fidelity`, order-free);
- ``--verify-rules`` checks: shard 1's, which holds the first batch, where an audit runs them;
- an audit that checks nothing (no samples, or none with anything to explain) is refused here unless the shards
  were run with ``--allow-empty``: one shard alone cannot tell;
- timing: ``elapsed_s`` is the sum of the shards' (the work done; their wall time may overlap).

Refused, each as one line naming the files (exit 2): a report that is not one shard of a sharded audit; shards of
different models (sha256), configs, dtypes, devices, tolerances, graphs, input sets, batch sizes or shard counts;
two copies of one shard or overlapping samples; and an incomplete set. Decision: merging an incomplete set is an
error, not a partial report: the merged report is a CI gate, and a gate that passes on the shards it happened to
get would pass silently on a subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._version import __version__
from .errors import InputError
from .fidelity import worse_fidelity
from .fragments import result_from_run
from .reports.json_report import read_report
from .results import AuditResult, check_not_vacuous, finalize, sample_notes
from .verdicts import Tolerance

ENVIRONMENT_KEYS = ("torch", "onnx", "onnxruntime")


class MergeError(InputError):
    """Shards that cannot be merged into one audit."""


@dataclass(frozen=True)
class Part:
    """One shard's result and how messages name it (a report file, or ``shard 2/4`` of a batch run)."""

    label: str
    result: AuditResult


def merge_results(parts: Sequence[Part], what: str = "") -> AuditResult:
    """The result of the unsharded audit whose shards ``parts`` are (every shard, once, in any order).

    ``what`` prefixes messages (``run 2: ``). Raises :class:`MergeError` naming the parts concerned.
    """
    for part in parts:
        if part.result.shard is None:
            raise MergeError(
                f"{part.label}: {what}not a shard report: it audits the whole input set (written without --shard)"
            )
    first = parts[0]
    for part in parts[1:]:
        _check_same_audit(first, part, what)
    shards = _check_complete(parts, what)
    filled = [part for part in parts if part.result.samples]
    for part in filled[1:]:
        _check_same_layers(filled[0], part, what)
    order, samples = _samples_in_order(filled, first.result.shard.total_samples, what)
    layers = _layer_data(filled, order)
    reference = filled[0].result if filled else first.result
    tolerance = _tolerance(reference)
    record = first.result.shard
    layer_audits, finals = finalize(layers, samples, tolerance, first.result.dtype)
    check_not_vacuous(first.result.model_path, finals, record.inputs, record.allow_empty)
    last = max(filled, key=lambda part: part.result.samples[-1].index, default=None)
    fidelity = None
    for part in parts:
        fidelity = worse_fidelity(fidelity, part.result.fidelity)
    compared = _compared(parts)
    timings = [part.result.elapsed_s for part in parts if part.result.elapsed_s is not None]
    warnings = list(dict.fromkeys(w for part in parts for w in part.result.warnings))
    return AuditResult(
        model_path=first.result.model_path,
        model_format=first.result.model_format,
        model_sha256=first.result.model_sha256,
        dtype=first.result.dtype,
        device=first.result.device,
        tolerance=tolerance,
        layers=layer_audits,
        samples=finals,
        fidelity=fidelity,
        fidelity_compared=compared,
        notes=tuple((_graph_notes(last, what) if last else []) + sample_notes(finals, bool(layer_audits))),
        rule_checks=shards[1].result.rule_checks,
        config=first.result.config,
        elapsed_s=sum(timings) if timings else None,
        warnings=tuple(warnings),
    )


def _pair(a: Part, b: Part) -> str:
    return f"{a.label}, {b.label}"


def _check_same_audit(a: Part, b: Part, what: str) -> None:
    """Refuse two shards of different audits, naming what differs."""
    x, y = a.result, b.result
    sx, sy = x.shard, y.shard
    differences = [
        ("models", (x.model_sha256, x.model_format), (y.model_sha256, y.model_format), _sha),
        ("configs", _config_key(x), _config_key(y), _config_name),
        ("dtypes", x.dtype, y.dtype, str),
        ("devices", x.device, y.device, str),
        ("tolerances", _tolerance_key(x), _tolerance_key(y), str),
        ("shard counts", sx.count, sy.count, str),
        ("input sets", (sx.inputs, sx.total_samples), (sy.inputs, sy.total_samples), _inputs),
        ("batch sizes", sx.batch_size, sy.batch_size, str),
        ("targets", sx.target, sy.target, lambda t: "the config's" if t is None else str(t)),
        ("--allow-empty settings", sx.allow_empty, sy.allow_empty, str),
        ("--fidelity settings", _fidelity_key(x), _fidelity_key(y), _fidelity_setting),
    ]
    for name, left, right, show in differences:
        if left != right:
            raise MergeError(
                f"{_pair(a, b)}: {what}shards of different {name} ({show(left)} vs {show(right)}); "
                "only shards of one audit merge"
            )


def _fidelity_key(result) -> tuple | None:
    compared = result.fidelity_compared
    return None if compared is None else (compared.mode, compared.seed)


def _fidelity_setting(key) -> str:
    return "not recorded" if key is None else f"{key[0]}, seed {key[1]}"


def _compared(parts: list[Part]):
    """The batches the shards' forward checks compared, together (None if the shards' reports do not say)."""
    compared = None
    for part in parts:
        mine = part.result.fidelity_compared
        if mine is not None:
            compared = mine if compared is None else compared.merged(mine)
    return compared


def _sha(key) -> str:
    return f"sha256 {key[0][:12]}"


def _config_key(result: AuditResult):
    config = result.config or {}
    return (config.get("sha256"), config.get("resolved"), config.get("name"))


def _config_name(key) -> str:
    return str(key[2] or (key[0] or "rules")[:12])


def _inputs(key) -> str:
    return f"{key[0]}, {key[1]} samples"


def _tolerance_key(result: AuditResult) -> tuple:
    tolerance = result.tolerance
    return (tolerance.gate, tolerance.layer_rtol, tolerance.end_to_end_rtol)


def _check_complete(parts: Sequence[Part], what: str) -> dict[int, Part]:
    """Every shard 1..N once: two copies of a shard or a missing one are refused."""
    count = parts[0].result.shard.count
    shards: dict[int, Part] = {}
    for part in parts:
        index = part.result.shard.index
        if index in shards:
            raise MergeError(
                f"{_pair(shards[index], part)}: {what}both hold shard {index}/{count} (overlapping shards)"
            )
        shards[index] = part
    missing = [index for index in range(1, count + 1) if index not in shards]
    if missing:
        names = ", ".join(part.label for part in parts)
        listed = ", ".join(str(index) for index in missing)
        raise MergeError(
            f"{names}: {what}shard{'s' if len(missing) > 1 else ''} {listed} of {count} missing: a merge needs every "
            "shard (an incomplete set is refused, never merged into a partial report)"
        )
    return shards


def _check_same_layers(a: Part, b: Part, what: str) -> None:
    def key(part: Part):
        return [(dict(layer.meta), layer.tolerance) for layer in part.result.layers]

    if key(a) != key(b):
        raise MergeError(
            f"{_pair(a, b)}: {what}shards of different graphs or rules (their layer rows differ)"
        )


def _samples_in_order(filled: Sequence[Part], total: int, what: str):
    """The permutation that puts the parts' samples (concatenated) in global order, and the raw samples so."""
    raw = [sample for part in filled for sample in part.result.raw_samples()]
    indices = np.array([sample.index for sample in raw], dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    if len(ordered) > 1 and (np.diff(ordered) == 0).any():
        twice = int(ordered[np.flatnonzero(np.diff(ordered) == 0)[0]])
        holders = ", ".join(p.label for p in filled if any(s.index == twice for s in p.result.samples))
        raise MergeError(f"{holders}: {what}sample {twice} is in more than one shard (overlapping shards)")
    if len(ordered) != total or (total and (ordered[0] != 0 or ordered[-1] != total - 1)):
        names = ", ".join(part.label for part in filled)
        raise MergeError(
            f"{names}: {what}the shards hold {len(ordered)} distinct samples, not the input set's 0..{total - 1}"
        )
    return order, [raw[k] for k in order]


def _layer_data(filled: Sequence[Part], order: np.ndarray):
    """Each node's description and its per-sample figures over all shards, in global sample order."""
    if not filled:
        return []
    data = [part.result.layer_data() for part in filled]
    merged = []
    for k, (meta, values) in enumerate(data[0]):
        columns = {key: np.concatenate([shard[k][1][key] for shard in data])[order] for key in values}
        merged.append((meta, columns))
    return merged


def _tolerance(result: AuditResult) -> Tolerance:
    """The audit's tolerance, per-node overrides taken from the rows (what the shards were held to)."""
    tolerance = result.tolerance
    per_node = {layer.node_id: layer.tolerance for layer in result.layers}
    return Tolerance(tolerance.gate, tolerance.layer_rtol, tolerance.end_to_end_rtol, node_rtol=per_node.get)


def _graph_notes(part: Part, what: str) -> list[str]:
    """A shard's notes without the ones on its samples (which it appends last)."""
    result = part.result
    own = sample_notes(result.samples, bool(result.layers))
    notes = list(result.notes)
    if own and notes[-len(own) :] != own:
        raise MergeError(f"{part.label}: {what}its notes do not match its samples (a damaged report)")
    return notes[: len(notes) - len(own)]


# ------------------------------------------------------------------------------------------ reports


def merge_files(paths: Sequence) -> tuple[list[AuditResult], dict]:
    """The merged results of the shard report files ``paths`` (:func:`merge_reports`)."""
    return merge_reports([(str(path), read_report(path)) for path in paths])


def merge_reports(named: Sequence[tuple[str, dict]]) -> tuple[list[AuditResult], dict]:
    """The merged results of shard reports (``(file name, report)``, each schema-valid), run by run, and the
    environment the merged report records (the first report's; the shards must share torch, onnx, onnxruntime).
    """
    (first_name, first), rest = named[0], named[1:]
    if first["tool"].get("version") != __version__:
        raise MergeError(
            f"{first_name}: written by lrpaudit {first['tool'].get('version')}, this is {__version__}: merge with "
            "the version that wrote the shards"
        )
    for name, report in rest:
        pair = f"{first_name}, {name}"
        for key, label in (("schema_version", "schema versions"), ("tool", "lrpaudit versions")):
            if report[key] != first[key]:
                raise MergeError(
                    f"{pair}: reports of different {label} ({_show(first[key])} vs {_show(report[key])})"
                )
        for key in ENVIRONMENT_KEYS:
            left, right = first["environment"].get(key), report["environment"].get(key)
            if left != right:
                raise MergeError(f"{pair}: reports written with different {key} versions ({left} vs {right})")
        if len(report["runs"]) != len(first["runs"]):
            raise MergeError(
                f"{pair}: reports of different audits ({len(first['runs'])} vs {len(report['runs'])} runs)"
            )
    results = []
    for k in range(len(first["runs"])):
        what = f"run {k + 1}: " if len(first["runs"]) > 1 else ""
        parts = [Part(name, _rebuilt(name, report["runs"][k], what)) for name, report in named]
        results.append(merge_results(parts, what))
    return results, dict(first["environment"])


def _rebuilt(name: str, run: dict, what: str) -> AuditResult:
    try:
        return result_from_run(run)
    except InputError as exc:
        raise MergeError(f"{name}: {what}{exc}") from exc


def _show(value) -> str:
    return value.get("version", "?") if isinstance(value, dict) else str(value)
