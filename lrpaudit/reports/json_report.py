"""The JSON report (DESIGN section 9): the machine-readable record of one ``check`` over models x configs.

Contract (schema ``lrpaudit/report.schema.json``, draft 2020-12, shipped in the package):

- ``schema_version`` is ``"MAJOR.MINOR"``: MINOR grows with added keys, MAJOR with removed/renamed keys or changed
  meaning. Consumers check MAJOR and ignore keys they do not know.
- Every key is always present; a missing value is ``null``, never an absent key.
- JSON has no NaN/Infinity: a non-finite number is written as ``null`` and the object that holds it (a layer row, a
  sample, the fidelity record, a rule check, the worst row) carries ``"non_finite": true`` (``false`` otherwise);
  so does a row whose verdict is ``non_finite`` (its NaN may sit in another sample than the worst one shown).
- Rows are in graph (topological) order; samples in input order; floats at full precision.
- Aggregated layer rows hold the worst sample's figures (``worst_sample`` names it, ``failing_samples`` counts).
- ``runs[].shard`` (1.2) is ``null`` for an audit of the whole input set; a sharded audit (``check --shard I/N``)
  records which shard it is, of how many samples in all, and what its shards must share to be merged
  (``lrpaudit merge``). Sample indices are global in both.

``summary``: ``runs`` (model x config audits), ``samples`` (over all runs), ``layer_checks`` (aggregated layer rows
over all runs), ``failures`` (those rows whose verdict is not ``pass``), ``sample_failures`` (samples whose
verdict is not ``pass``), ``worst`` (the worst layer row: failing before passing, then by the gated figure; NaN
counts as worst) with ``run`` (index into ``runs``), ``sample`` (sample index), ``layer`` (node id) and
``rel_error``.
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path

from .._version import __version__
from ..display import json_text
from ..errors import InputError, first_line
from ..files import read_limited
from ..verdicts import CATEGORIES, ROW_FIELDS, rank_key
from ._format import run_label
from ._io import atomic_write_text
from .schema_check import ReportSchemaError, validate_report

SCHEMA_VERSION = "1.2"
LAYER_KEYS = (
    "id",
    "node_name",
    "op",
    "rule",
    "rule_source",
    "bias_mode",
    *ROW_FIELDS,
    "tolerance",
    "verdict",
    "passing_tolerance",
    "largest_category",
    "hint",
    "cancellation",
)
SAMPLE_CATEGORIES = CATEGORIES


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _one(values: list[str]) -> str | None:
    unique = sorted(set(values))
    return ",".join(unique) if unique else None


def environment_info(results=(), extra: dict | None = None) -> dict:
    """Versions and platform; ``device``/``dtype`` from the runs (comma-joined if they differ)."""
    env = {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "platform": platform.platform(),
        "device": _one([r.device for r in results]),
        "dtype": _one([r.dtype for r in results]),
    }
    env.update(extra or {})
    return env


# ---------------------------------------------------------------- non-finite numbers


def _plain(value):
    """numpy scalars and tuples to plain JSON types (finite-ness is handled by ``_scrub``)."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "item"):  # numpy / torch scalar
        return _plain(value.item())
    return value


def _scrub(value, record: dict | None = None):
    """Replace NaN/inf by ``None`` in place of their dict/list; mark the nearest enclosing record.

    A *record* is a dict that has a ``non_finite`` key (rows, samples, fidelity, ...). Nested plain dicts such as
    ``r_input_by_name`` are cleaned too but the marker goes on their record, never into them.
    """
    if isinstance(value, dict):
        if "non_finite" in value:
            record = value
        for key, item in list(value.items()):
            if isinstance(item, float) and not math.isfinite(item):
                value[key] = None
                _mark(record if record is not None else value)
            else:
                _scrub(item, record)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, float) and not math.isfinite(item):
                value[i] = None
                if record is not None:
                    _mark(record)
            else:
                _scrub(item, record)
    return value


def _mark(record: dict) -> None:
    record["non_finite"] = True


def _record(fields: dict) -> dict:
    """A report object with its ``non_finite`` marker, numbers cleaned.

    The marker is also set on an object whose verdict is ``non_finite``: an aggregated row shows the worst sample
    by the gated figure, and the NaN that failed it may sit in another sample's figures.
    """
    out = _plain(fields)
    out.setdefault("non_finite", False)
    if out.get("verdict") == "non_finite":
        out["non_finite"] = True
    return _scrub(out)


# ---------------------------------------------------------------- building


def _layer_row(row, samples) -> dict:
    out = {key: row[key] for key in LAYER_KEYS}
    if row.worst_sample is not None:
        position = row.worst_sample
        out["worst_sample"] = samples[position].index if 0 <= position < len(samples) else position
        out["failing_samples"] = row.failing_samples
    return _record(out)


def _sample(result, position: int) -> dict:
    sample = result.samples[position]
    out = _record(
        {
            "index": sample.index,
            "source": sample.source,
            "target": sample.target,
            "r_output": sample.r_output,
            "r_input": sample.r_input,
            "r_input_by_name": dict(sample.r_input_by_name),
            "leak": sample.leak,
            "rel_error": sample.rel_error,
            "rel_unexplained": sample.rel_unexplained,
            "output_scale": sample.output_scale,
            "nothing_to_explain": sample.nothing_to_explain,
            "totals": {key: sample.totals.get(key) for key in SAMPLE_CATEGORIES},
            "max_cancellation": sample.max_cancellation,
            "max_cancellation_layer": sample.max_cancellation_layer,
            "verdict": sample.verdict,
            "hint": sample.hint,
        }
    )
    out["layers"] = [
        _record({key: row[key] for key in LAYER_KEYS}) for row in result.sample_layer_rows(position)
    ]
    return out


def _fidelity(result) -> dict:
    base = {"reference": None, "max_abs_diff": None, "max_rel_diff": None, "passed": None}
    extra = {"dtype": None, "tolerance": None, "first_diverging": None, "checked": False}
    if result.fidelity is not None:
        base.update(result.fidelity.as_dict())
        base["checked"] = True
    compared = {"mode": None, "seed": None, "batches": [], "samples": 0}
    if result.fidelity_compared is not None:
        compared.update(result.fidelity_compared.as_dict())
    return _record({**extra, **base, **compared})


def _rule_checks(result):
    if result.rule_checks is None:
        return None
    return [
        _record(
            {
                "node_id": check.node_id,
                "rule": check.rule,
                "max_abs_dev": check.max_abs_dev,
                "scale": check.scale,
                "rel_dev": check.rel_dev,
                "units_checked": check.units_checked,
                "units_total": check.units_total,
            }
        )
        for check in result.rule_checks
    ]


def _config(result) -> dict:
    config = result.config or {}
    resolved = config.get("resolved")
    return _record(
        {
            "path": str(config["path"]) if config.get("path") is not None else None,
            "sha256": config.get("sha256"),
            "resolved": resolved if isinstance(resolved, dict) else None,
            "name": config.get("name"),
            "label": run_label(result),
        }
    )


def _shard(result) -> dict | None:
    shard = getattr(result, "shard", None)
    if shard is None:
        return None
    return _plain(
        {
            "index": shard.index,
            "count": shard.count,
            "total_samples": shard.total_samples,
            "batch_size": shard.batch_size,
            "inputs": shard.inputs,
            "target": shard.target,
            "allow_empty": shard.allow_empty,
        }
    )


def build_run(result) -> dict:
    """One model x config audit as a report ``runs[]`` entry."""
    tolerance = result.tolerance
    return {
        "model": {
            "path": str(result.model_path),
            "format": result.model_format,
            "sha256": result.model_sha256,
        },
        "config": _config(result),
        "fidelity": _fidelity(result),
        "verdict": result.verdict,
        "dtype": result.dtype,
        "device": result.device,
        "tolerance": _record(
            {
                "gate": tolerance.gate,
                "layer_rtol": tolerance.layer_rtol,
                "end_to_end_rtol": tolerance.end_to_end_rtol,
                "unexplained_bound": result.bound,
            }
        ),
        "elapsed_s": _plain(getattr(result, "elapsed_s", None)),
        "layers": [_layer_row(row, result.samples) for row in result.layer_rows()],
        "samples": [_sample(result, position) for position in range(len(result.samples))],
        "notes": [str(note) for note in result.notes],
        "rule_checks": _rule_checks(result),
        "shard": _shard(result),
    }


def _worst(runs: list[dict]) -> dict:
    """The worst layer row over all runs (:func:`lrpaudit.verdicts.rank_key`; ties: the first run and row)."""
    ranked = [
        (rank_key(row, run["tolerance"]["gate"]), index, position, row)
        for index, run in enumerate(runs)
        for position, row in enumerate(run["layers"])
    ]
    if not ranked:
        return _record(
            {"run": None, "model": None, "sample": None, "layer": None, "rel_error": None, "verdict": None}
        )
    _, index, _, row = min(ranked, key=lambda item: item[:3])
    return _record(
        {
            "run": index,
            "model": runs[index]["model"]["path"],
            "sample": row.get("worst_sample"),
            "layer": row["id"],
            "rel_error": row["rel_error"],
            "rel_residual": row["rel_residual"],
            "verdict": row["verdict"],
            "non_finite": row["non_finite"],
        }
    )


def build_summary(runs: list[dict]) -> dict:
    layers = [row for run in runs for row in run["layers"]]
    samples = [sample for run in runs for sample in run["samples"]]
    failed = any(run["verdict"] != "pass" for run in runs)
    return {
        "verdict": "fail" if failed else "pass",
        "runs": len(runs),
        "samples": len(samples),
        "layer_checks": len(layers),
        "failures": sum(row["verdict"] != "pass" for row in layers),
        "sample_failures": sum(sample["verdict"] != "pass" for sample in samples),
        "worst": _worst(runs),
    }


def build_report(results, environment: dict | None = None) -> dict:
    """The whole report for a list of AuditResults (one per model x config). ``environment`` overrides keys."""
    results = list(results)
    runs = [build_run(result) for result in results]
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "lrpaudit", "version": __version__},
        "environment": _scrub(_plain(environment_info(results, environment))),
        "runs": runs,
        "summary": build_summary(runs),
    }


# ---------------------------------------------------------------- writing


def to_json_text(report: dict) -> str:
    """Strict JSON text (``NaN`` refused: ``ValueError``), 2-space indented, newline-terminated; strings are exact,
    with non-printable characters as ``\\u`` escapes (:func:`lrpaudit.display.json_text`)."""
    return json_text(json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False)) + "\n"


def write_json(report: dict, path) -> Path:
    """Serialize first, then write atomically: a failure leaves no file and an old report untouched."""
    return atomic_write_text(path, to_json_text(report))


# ---------------------------------------------------------------- reading


MAX_REPORT_BYTES = 512 * 2**20  # a report of 20,000 layers x 16 samples is about 200 MB
MAX_DEPTH = 64  # a report nests 6 levels deep; deeper JSON is not one (and would exhaust the parser's stack)


def read_report(path, name: str | None = None, remedy: str = "regenerate it") -> dict:
    """Read and validate a report (a baseline, a shard to merge); any problem is an InputError that starts with
    ``name`` (default: the path). The file is size-limited before it is read and its nesting depth checked
    before it is validated; a report of another schema major version cannot be read (``remedy`` says what to do).
    """
    path = Path(path)
    name = name or str(path)
    try:
        raw = read_limited(path, MAX_REPORT_BYTES, InputError, "JSON report", prefix=name)
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a folder, not a JSON report") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: cannot read it: not UTF-8 text (byte {exc.start})") from exc
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:  # the parser recurses once per level
        raise InputError(f"{name}: not an lrpaudit report (JSON nested too deeply to read)") from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InputError(f"{name}: not valid JSON ({first_line(exc, 120)})") from exc
    if _depth(report) > MAX_DEPTH:
        raise InputError(f"{name}: not an lrpaudit report (JSON nested over {MAX_DEPTH} levels deep)")
    if not isinstance(report, dict):
        raise InputError(f"{name}: not an lrpaudit report (a JSON object is expected)")
    version = report.get("schema_version")
    major = SCHEMA_VERSION.split(".")[0]
    if isinstance(version, str) and version.split(".")[0] != major:
        raise InputError(
            f"{name}: report schema version {version} cannot be read by this lrpaudit (it reads {major}.x): {remedy}"
        )
    try:
        validate_report(report)
    except ReportSchemaError as exc:
        raise InputError(f"{name}: not a valid lrpaudit report: {exc}") from exc
    return report


def _depth(data) -> int:
    """How deeply lists and objects nest in parsed JSON (iteratively: the data may be deeper than the stack)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
