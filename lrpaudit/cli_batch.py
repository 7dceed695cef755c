"""``lrpaudit batch MANIFEST.yaml``: models x configs in one command, one set of reports.

Manifest format (``version: 1`` required; every path is relative to the manifest's folder)::

    version: 1
    models:                             # at least one
      - path: digits_cnn.onnx           # ONNX or TorchScript file
        inputs: digits_samples.npy      # .npy / .npz / folder of them; or random: N (seed: S, default 0)
        input_shape: [1, 1, 8, 8]       # optional: as --input-shape ("1,1,8,8" or "x=1,1,8,8;y=...")
        batch_size: 16                  # optional, default 16
        name: cnn                       # optional id for runs: (default: the path as written)
    configs:                            # at least one: a preset, or a config file
      - preset: conservative            # id: the preset's name
      - path: lrp.yaml                  # id: the path as written (or name:)
        name: mine
    runs:                               # optional: explicit {model, config} pairs by id;
      - {model: cnn, config: mine}      # without it, every model x every config (model by model)

The inputs belong to a model (shapes differ between models); to audit one model on two input sets, list it twice
with different names. The whole manifest is checked before anything runs: unknown keys (with a did-you-mean),
wrong types, missing model, input or config files, unknown presets, unknown or duplicate ids, and every config
file itself, each as ``file:line:col: dotted.key: message`` (exit 2).

A run that cannot be carried out (a model that does not load, inputs that do not fit, a forward pass that does
not match the runtime) is reported on stderr and the remaining runs still go ahead, so that one CI log names
every broken combination; the command then exits 2 and writes no report (nothing half-written: a model that
cannot be loaded is never silently skipped). Otherwise it exits 1 if any run fails (0 with ``--exit-zero``),
else 0.

``--jobs N`` runs the audits in N processes (``spawn``), each with ``max(1, cpus // N)`` torch threads; results
are reported in manifest order whatever the completion order. Each worker returns the run's ``AuditResult``
(plain numbers, strings and numpy arrays: no tensors or models).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, _err, _parse_shape, guarded, main
from .config.schema import ConfigFileError, describe, error_at, unknown
from .config.schema import _message as _config_message
from .config.yaml_loader import Path_, Positions, YamlError, dotted, load_yaml
from .errors import ConfigError, LrpauditError, OutputError

MANIFEST_VERSION = 1


# ------------------------------------------------------------------------------------------ the schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    path: str
    name: str | None = None
    inputs: str | None = None
    random: Annotated[int, Field(ge=1)] | None = None
    seed: int | None = None
    input_shape: Any = None  # a string or a list of integers, checked by hand
    batch_size: Annotated[int, Field(ge=1)] | None = None


class ConfigSpec(_Strict):
    preset: str | None = None
    path: str | None = None
    name: str | None = None


class RunSpec(_Strict):
    model: str
    config: str


class ManifestSpec(_Strict):
    version: int
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    configs: Annotated[list[ConfigSpec], Field(min_length=1)]
    runs: Annotated[list[RunSpec], Field(min_length=1)] | None = None


_FIELDS = {
    (): list(ManifestSpec.model_fields),
    ("models",): list(ModelSpec.model_fields),
    ("configs",): list(ConfigSpec.model_fields),
    ("runs",): list(RunSpec.model_fields),
}


def _message(err: dict) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "missing":
        if loc == ("version",):
            return f"missing required key (a manifest starts with 'version: {MANIFEST_VERSION}')"
        return "missing required key"
    if err["type"] == "extra_forbidden":
        section = tuple(part for part in loc[:-1] if isinstance(part, str))
        return unknown(loc[-1], _FIELDS.get(section, []))
    return _config_message(err)


# ----------------------------------------------------------------------------------------- the manifest


@dataclass
class ModelEntry:
    id: str
    path: Path
    inputs: Path | None
    random: int | None
    seed: int
    input_shape: str | None
    batch_size: int


@dataclass
class ConfigEntry:
    id: str
    preset: str | None
    path: Path | None


@dataclass
class Run:
    index: int  # 0-based position in the manifest's run order
    model: ModelEntry
    config: ConfigEntry

    @property
    def label(self) -> str:
        return f"{self.model.id} x {self.config.id}"


@dataclass
class Manifest:
    path: str
    sha256: str
    models: list[ModelEntry]
    configs: list[ConfigEntry]
    runs: list[Run]
    explicit: bool


def _shape_text(value: Any, file: str, positions: Positions, path: Path_) -> str | None:
    """``input_shape``: a list of integers or the ``--input-shape`` text; returned as that text."""
    if value is None:
        return None
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise error_at(file, positions, path, "expected a list of positive integers, e.g. [1, 3, 32, 32]")
        return ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise error_at(
            file,
            positions,
            path,
            f"expected a shape such as [1, 3, 32, 32] or '1,3,32,32', got {describe(value)}",
        )
    try:
        _parse_shape(value)
    except click.BadParameter as exc:
        raise error_at(file, positions, path, exc.message) from None
    return value


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _check_file(
    resolved: Path, file: str, positions: Positions, path: Path_, what: str, folder_ok: bool
) -> None:
    if not resolved.exists():
        raise error_at(file, positions, path, f"no such {what}: {resolved}")
    if resolved.is_dir() and not folder_ok:
        raise error_at(file, positions, path, f"{resolved} is a folder, not a {what}")


def _unique(ids: list[str], section: str, file: str, positions: Positions) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(ids):
        if item in seen:
            where = (section, i, "name") if (section, i, "name") in positions.values else (section, i)
            raise error_at(
                file,
                positions,
                where,
                f"duplicate {section[:-1]} id {item!r} (also {section}[{seen[item]}]; give one a distinct name:)",
            )
        seen[item] = i


def load_manifest(manifest_path: str | Path) -> Manifest:
    """Read and check a manifest; raise a ConfigError (``file:line:col: key: message``) on the first problem."""
    from .config import load_config, preset_path

    file = str(manifest_path)
    try:
        raw = Path(manifest_path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such manifest file") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a folder, not a manifest file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        data, positions = load_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}:1:1: <root>: not UTF-8 text (byte {exc.start})") from None
    except YamlError as exc:
        raise ConfigFileError(file, exc.line, exc.column, dotted(exc.path), exc.message) from None
    if data is None:
        raise error_at(file, positions, (), f"empty manifest (start it with 'version: {MANIFEST_VERSION}')")
    if not isinstance(data, dict):
        raise error_at(
            file, positions, (), f"expected a mapping (version, models, configs, runs), got {describe(data)}"
        )
    try:
        spec = ManifestSpec.model_validate(data)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            at_key = err["type"] == "extra_forbidden"
            found.append(error_at(file, positions, tuple(err["loc"]), _message(err), at_key=at_key))
        found.sort(key=lambda e: (e.line, e.column))
        found[0].errors = found
        raise found[0] from None
    if spec.version != MANIFEST_VERSION:
        raise error_at(
            file,
            positions,
            ("version",),
            f"unsupported version {spec.version} (this lrpaudit reads version {MANIFEST_VERSION})",
        )
    base = Path(file).parent

    models = []
    for i, item in enumerate(spec.models):
        here = ("models", i)
        path = _resolve(base, item.path)
        _check_file(path, file, positions, (*here, "path"), "model file", folder_ok=False)
        if (item.inputs is None) == (item.random is None):
            key = (*here, "random") if item.random is not None else here
            raise error_at(file, positions, key, "give either inputs: PATH or random: N (one of them)")
        if item.seed is not None and item.random is None:
            raise error_at(file, positions, (*here, "seed"), "seed applies to random: N inputs only")
        inputs = None
        if item.inputs is not None:
            inputs = _resolve(base, item.inputs)
            _check_file(inputs, file, positions, (*here, "inputs"), "inputs file or folder", folder_ok=True)
        models.append(
            ModelEntry(
                id=item.name if item.name is not None else item.path,
                path=path,
                inputs=inputs,
                random=item.random,
                seed=item.seed or 0,
                input_shape=_shape_text(item.input_shape, file, positions, (*here, "input_shape")),
                batch_size=item.batch_size or 16,
            )
        )
    _unique([m.id for m in models], "models", file, positions)

    configs = []
    for i, item in enumerate(spec.configs):
        here = ("configs", i)
        if (item.preset is None) == (item.path is None):
            raise error_at(file, positions, here, "give either preset: NAME or path: FILE (one of them)")
        if item.preset is not None:
            try:
                preset_path(item.preset)
            except ConfigError as exc:
                raise error_at(file, positions, (*here, "preset"), str(exc)) from None
            load_config(preset=item.preset)
            configs.append(ConfigEntry(item.name or item.preset, item.preset, None))
        else:
            path = _resolve(base, item.path)
            _check_file(path, file, positions, (*here, "path"), "config file", folder_ok=False)
            load_config(path)  # a broken config file fails here, with its own file:line:col
            configs.append(ConfigEntry(item.name or item.path, None, path))
    _unique([c.id for c in configs], "configs", file, positions)

    if spec.runs is None:
        pairs = [(m, c) for m in models for c in configs]
    else:
        by_model = {m.id: m for m in models}
        by_config = {c.id: c for c in configs}
        pairs, seen = [], {}
        for i, item in enumerate(spec.runs):
            for key, table in (("model", by_model), ("config", by_config)):
                name = getattr(item, key)
                if name not in table:
                    message = unknown(name, list(table), f"{key} id {name!r}")
                    raise error_at(file, positions, ("runs", i, key), message)
            pair = (item.model, item.config)
            if pair in seen:
                raise error_at(file, positions, ("runs", i), f"duplicate run (same as runs[{seen[pair]}])")
            seen[pair] = i
            pairs.append((by_model[item.model], by_config[item.config]))
    runs = [Run(k, model, config) for k, (model, config) in enumerate(pairs)]
    return Manifest(file, hashlib.sha256(raw).hexdigest(), models, configs, runs, spec.runs is not None)


# ---------------------------------------------------------------------------------------------- running


def _options(run: Run) -> dict:
    """The ``check`` options for one run (see :func:`lrpaudit.cli_check.run_one`)."""
    model, config = run.model, run.config
    return {
        "config": config.path,
        "preset": config.preset,
        "inputs": model.inputs,
        "random": model.random,
        "seed": model.seed,
        "input_shape": model.input_shape,
        "batch_size": model.batch_size,
        "dtype": None,
        "device": "cpu",
        "target": None,
        "gate": None,
        "verify_rules": False,
        "save_relevance": None,
        "quiet": True,  # one line per run from this command, not one per batch
    }


@dataclass
class Outcome:
    """What one run gave: an AuditResult, or the message of a user-facing error (exit 2)."""

    index: int
    seconds: float
    result: Any = None
    error: str | None = None
    exit_code: int = EXIT_USAGE


def execute(index: int, model_path: Path, options: dict) -> Outcome:
    """Run one audit; a user-facing error becomes an Outcome (errors with custom ``__init__`` do not pickle)."""
    from .cli_check import run_one

    started = time.perf_counter()
    try:
        result = run_one(model_path, options)
    except LrpauditError as exc:
        return Outcome(index, time.perf_counter() - started, error=str(exc), exit_code=exc.exit_code)
    return Outcome(index, time.perf_counter() - started, result=result)


class WorkerCrash(Exception):
    """An internal error inside a worker process; the message carries the worker's traceback."""


def _execute_in_worker(index: int, model_path: Path, options: dict) -> Outcome:
    try:
        return execute(index, model_path, options)
    except MemoryError:  # a limit, not a bug: it pickles, and the command reports it as such
        raise
    except Exception as exc:  # a bug: carried back as text, so that any exception type gets home
        raise WorkerCrash(
            f"{type(exc).__name__}: {exc}\n\nworker traceback:\n{traceback.format_exc()}"
        ) from None


def _init_worker(threads: int) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(threads)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def run_all(manifest: Manifest, jobs: int, report) -> list[Outcome]:
    """Every run of the manifest, in manifest order; ``report(outcome)`` is called as each one finishes."""
    runs = manifest.runs
    outcomes: list[Outcome | None] = [None] * len(runs)
    workers = min(jobs, len(runs))
    if workers <= 1:
        for run in runs:
            outcome = execute(run.index, run.model.path, _options(run))
            outcomes[run.index] = outcome
            report(outcome)
        return outcomes
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, cpu_count() // workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        futures = [pool.submit(_execute_in_worker, run.index, run.model.path, _options(run)) for run in runs]
        try:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[outcome.index] = outcome
                report(outcome)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return outcomes


# -------------------------------------------------------------------------------------------- reporting


def worst_row(result) -> dict | None:
    """The run's worst aggregated layer row: failing before passing, then by rel_error (NaN worst)."""
    from .reports._common import metric_value, severity

    rows = result.layer_rows()
    if not rows:
        return None
    return max(rows, key=lambda row: (severity(row["verdict"]), metric_value(row["rel_error"])))


def run_line(run: Run, outcome: Outcome, total: int) -> str:
    """``lrpaudit: [3/9] digits_cnn.onnx x conservative: PASS (0.1 s)``."""
    from .audit import CATEGORY_WORDS
    from .reports._common import fmt

    head = f"lrpaudit: [{run.index + 1}/{total}] {run.label}"
    took = f"({outcome.seconds:.1f} s)"
    if outcome.error is not None:
        return f"{head}: ERROR {took}: {outcome.error}"
    result = outcome.result
    if result.verdict == "pass":
        return f"{head}: PASS {took}"
    rows = result.layer_rows()
    failing = sum(row["verdict"] != "pass" for row in rows)
    worst = worst_row(result)
    text = f"{head}: FAIL {took}: {failing}/{len(rows)} layers fail"
    if worst is not None and worst["verdict"] != "pass":
        category = CATEGORY_WORDS.get(worst.get("largest_category") or "", "-")
        return f"{text}; worst {worst['id']} rel_error {fmt(worst['rel_error'])} ({category})"
    failed_samples = sum(s.verdict != "pass" for s in result.samples)
    return f"{text}; {failed_samples}/{len(result.samples)} samples fail end to end"


def render_summary(manifest: Manifest, results: list, console) -> None:
    """The run x verdict x worst layer table on stdout."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from .reports.table import VERDICT_STYLE, _num

    shape = (
        f"{len(manifest.runs)} listed runs"
        if manifest.explicit
        else f"{len(manifest.models)} models x {len(manifest.configs)} configs"
    )
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),  # two spaces between columns: the ids keep their 30 characters in 100 columns
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("model", overflow="fold", max_width=24)
    table.add_column("config", overflow="fold", max_width=20)
    table.add_column("layers", justify="right", no_wrap=True)
    table.add_column("worst layer", overflow="fold", max_width=30)
    table.add_column("rel_error", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for run, result in zip(manifest.runs, results):
        rows = result.layer_rows()
        passing = sum(row["verdict"] == "pass" for row in rows)
        worst = worst_row(result)
        verdict = result.verdict
        table.add_row(
            str(run.index + 1),
            escape(run.model.id),
            escape(run.config.id),
            f"{passing}/{len(rows)}",
            escape(worst["id"]) if worst else "-",
            _num(worst["rel_error"]) if worst else "-",
            Text(verdict.upper(), style=VERDICT_STYLE[verdict]),
            style="red" if verdict != "pass" else None,
        )
    console.print(escape(f"{manifest.path}  [{shape}]"), highlight=False, soft_wrap=True)  # never wrapped
    console.print(table)


def final_line(manifest: Manifest, results: list, seconds: float) -> str:
    from .reports._common import fmt

    passed = sum(result.verdict == "pass" for result in results)
    verdict = "PASS" if passed == len(results) else "FAIL"
    text = f"lrpaudit: {manifest.path}: {verdict}: {passed}/{len(results)} runs pass"
    if passed < len(results):
        ranked = [(worst_row(result), k) for k, result in enumerate(results)]
        ranked = [(row, k) for row, k in ranked if row is not None and row["verdict"] != "pass"]
        if ranked:
            from .reports._common import metric_value, severity

            row, k = max(
                ranked, key=lambda item: (severity(item[0]["verdict"]), metric_value(item[0]["rel_error"]))
            )
            text += f"; worst {manifest.runs[k].label}: {row['id']} rel_error {fmt(row['rel_error'])}"
    return f"{text} (in {seconds:.1f} s)"


def _check_output_folders(*paths: Path | None) -> None:
    """Fail before any audit when a report could not be written afterwards (a missing folder is a typo)."""
    for path in paths:
        if path is not None and not Path(path).parent.is_dir():
            raise OutputError(f"cannot write {path}: no such folder {Path(path).parent}")


@main.command()
@click.argument("manifest_path", metavar="MANIFEST.yaml", type=click.Path(path_type=Path))
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run audits in N processes (each gets max(1, cpus // N) torch threads).",
)
@click.option(
    "--json-report", type=click.Path(path_type=Path), help="Write the JSON report (every run) here."
)
@click.option("--junit-xml", type=click.Path(path_type=Path), help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--exit-zero", is_flag=True, help="Exit 0 even when conservation fails (errors still exit 2/3)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only the one-line verdict (and errors) on stderr.")
@guarded
def batch(manifest_path, jobs, json_report, junit_xml, markdown, fmt, exit_zero, quiet):
    """Audit every model x config of a manifest; exit 0 pass, 1 a run fails, 2 bad manifest/model/input, 3 bug."""
    from rich.console import Console

    from .reports import github
    from .reports import json_report as json_reports
    from .reports.junit import write_junit
    from .reports.markdown import build_markdown, write_markdown

    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    _check_output_folders(json_report, junit_xml, markdown)
    total = len(manifest.runs)
    if not quiet:
        _err(
            f"lrpaudit: {manifest.path}: {total} runs"
            + (f" in {min(jobs, total)} processes" if jobs > 1 else "")
        )

    def report(outcome: Outcome) -> None:
        if outcome.error is not None or not quiet:
            _err(run_line(manifest.runs[outcome.index], outcome, total))

    outcomes = run_all(manifest, jobs, report)
    errors = [outcome for outcome in outcomes if outcome.error is not None]
    if errors:
        names = ", ".join(f"[{o.index + 1}] {manifest.runs[o.index].label}" for o in errors)
        raise _BatchError(
            f"{manifest.path}: {len(errors)} of {total} runs could not be audited ({names}); no report written",
            max(o.exit_code for o in errors),
        )
    results = [outcome.result for outcome in outcomes]
    report_data = json_reports.build_report(results)
    report_data["batch"] = {
        "manifest": manifest.path,
        "sha256": manifest.sha256,
        "runs": [{"run": run.index, "model": run.model.id, "config": run.config.id} for run in manifest.runs],
    }
    if json_report:
        json_reports.write_json(report_data, json_report)
    if junit_xml:
        write_junit(results, junit_xml)
    if markdown:
        write_markdown(results, markdown)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github.annotations(results):
            click.echo(line, err=True)
        github.append_step_summary(build_markdown(results))
    if fmt == "json":
        click.echo(json_reports.to_json_text(report_data))
    elif not quiet:
        console = Console(width=None if sys.stdout.isatty() else 100)
        render_summary(manifest, results, console)
    _err(final_line(manifest, results, time.perf_counter() - started))
    failed = any(result.verdict != "pass" for result in results)
    sys.exit(EXIT_FAIL if failed and not exit_zero else EXIT_OK)


class _BatchError(LrpauditError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
