"""``lrpaudit batch MANIFEST.yaml``: models x configs in one command, one set of reports.

The manifest format is documented in :mod:`lrpaudit.config.manifest`, how its runs (and their sample shards) are
carried out in :mod:`lrpaudit.runner`: on this machine (``--executor local``, the default and the reference) or on
a Dask cluster (``--executor dask [--scheduler ADDRESS]``, :mod:`lrpaudit.dask_executor`). A run that cannot be audited is reported on stderr and the other runs go on; the command
then exits 2 and writes no report (a model that cannot be loaded is never skipped silently). Otherwise it exits
1 if any run fails (0 with ``--exit-zero``), else 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import LrpauditError
from ._common import EXIT_FAIL, EXIT_OK, Progress, err, guarded, stdout_console


class BatchError(LrpauditError):
    """Some runs could not be audited: exit with the worst of their exit codes."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@click.command()
@click.argument("manifest_path", metavar="MANIFEST.yaml", type=click.Path(path_type=Path))
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Run audits in N processes, or N local Dask workers (each gets max(1, cpus // N) torch threads); "
    "default 1 process, or one Dask worker per CPU.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Where the audits run: this machine, or a Dask cluster (pip install 'lrpaudit[dask]').",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="With --executor dask: the scheduler of an existing cluster (tcp://host:8786); default: a local cluster.",
)
@click.option(
    "--json-report", type=click.Path(path_type=Path), help="Write the JSON report (every run) here."
)
@click.option("--junit-xml", type=click.Path(path_type=Path), help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("--html", type=click.Path(path_type=Path), help="Write a self-contained HTML report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--exit-zero", is_flag=True, help="Exit 0 even when conservation fails (errors still exit 2/3)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only the one-line verdict (and errors) on stderr.")
@guarded
def batch(
    manifest_path, jobs, executor, scheduler, json_report, junit_xml, markdown, html, fmt, exit_zero, quiet
):
    """Audit every model x config of a manifest; exit 0 pass, 1 a run fails, 2 bad manifest/model/input, 3 bug."""
    if scheduler is not None and executor != "dask":  # answers without loading torch
        raise click.UsageError("--scheduler needs --executor dask")
    from ..config.manifest import load_manifest
    from ..reports.batch_table import final_line, render_summary, run_line
    from ..reports.emit import ReportTargets, write_reports
    from ..reports.json_report import build_report, to_json_text
    from ..runner import LocalExecutor, run_all, tasks_for

    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    targets = ReportTargets(json_report, junit_xml, markdown, html=html)
    reads = [manifest_path, *(m.path for m in manifest.models), *(m.inputs for m in manifest.models)]
    targets.check(reads=[*reads, *(c.path for c in manifest.configs)])
    if executor == "dask":
        from ..dask_executor import DaskExecutor

        runner = DaskExecutor(
            jobs, scheduler, announce=None if quiet else lambda text: err(f"lrpaudit: {text}")
        )
    else:
        runner = LocalExecutor(jobs or 1)
    total = len(manifest.runs)
    tasks = len(tasks_for(manifest))
    if not quiet:
        shards = f" ({tasks} tasks: runs x sample shards)" if tasks != total else ""
        err(f"lrpaudit: {manifest.path}: {total} runs{shards}{runner.describe(tasks)}")

    progress = Progress(str(manifest.path), total, quiet, unit="runs", lines=False)
    finished = []

    def report(outcome) -> None:
        finished.append(outcome.index)
        if outcome.error is not None or not quiet:
            progress.log(run_line(manifest.runs[outcome.index], outcome, total))
        progress(len(finished), 1)

    try:
        outcomes = run_all(manifest, jobs or 1, report, runner, keep=html is not None)
    finally:
        progress.close()
    errors = [outcome for outcome in outcomes if outcome.error is not None]
    if errors:
        names = ", ".join(f"[{o.index + 1}] {manifest.runs[o.index].label}" for o in errors)
        raise BatchError(
            f"{manifest.path}: {len(errors)} of {total} runs could not be audited ({names}); no report written",
            max(o.exit_code for o in errors),
        )
    results = [outcome.result for outcome in outcomes]
    report_data = build_report(results)
    report_data["batch"] = {
        "manifest": manifest.path,
        "sha256": manifest.sha256,
        "runs": [{"run": run.index, "model": run.model.id, "config": run.config.id} for run in manifest.runs],
    }
    for line in write_reports(results, report_data, targets):
        err(line)
    if fmt == "json":
        click.echo(to_json_text(report_data))
    elif not quiet:
        render_summary(manifest, results, stdout_console())
    err(final_line(manifest, results, time.perf_counter() - started))
    failed = any(result.verdict != "pass" for result in results)
    sys.exit(EXIT_FAIL if failed and not exit_zero else EXIT_OK)
