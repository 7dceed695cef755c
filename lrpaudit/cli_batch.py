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

import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, _err, guarded, main
from .errors import LrpauditError
from .manifest import Manifest, Run, load_manifest
from .reports._common import check_writable

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
    for output in (json_report, junit_xml, markdown):
        if output is not None:
            check_writable(output)
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
