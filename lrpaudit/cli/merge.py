"""``lrpaudit merge A.json B.json ... -o OUT.json``: shard reports of one sharded audit into the unsharded report.

The shards are ``check --shard I/N`` reports of the same model(s), config(s) and inputs; the merged report is the
one an unsharded ``check`` writes (same verdicts, worst samples, figures, notes; timings summed), and JUnit,
Markdown and GitHub annotations are rendered from it as ``check`` renders them. What is refused, and why an
incomplete set is refused: :mod:`lrpaudit.merge`. Exit codes as ``check``: 0 pass, 1 fail, 2 refused, 3 a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import EXIT_FAIL, EXIT_OK, err, guarded, load_baseline_flag, render_results, verdict_of


@click.command()
@click.argument("reports", metavar="REPORT.json...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Write the merged JSON report here.",
)
@click.option("--junit-xml", type=click.Path(path_type=Path), help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--baseline", type=click.Path(path_type=Path), help="Fail only on regressions against this report."
)
@click.option(
    "--exit-zero", is_flag=True, help="Exit 0 even when conservation fails (errors still exit 2/3)."
)
@click.option("-v", "--verbose", is_flag=True, help="Wide table with every accounting column.")
@click.option("-q", "--quiet", is_flag=True, help="Only the one-line verdict on stderr.")
@guarded
def merge(reports, output, junit_xml, markdown, fmt, baseline, exit_zero, verbose, quiet):
    """Merge the shard reports of `check --shard I/N` into the report of the unsharded audit."""
    from ..merge import merge_files
    from ..reports.baseline import attach
    from ..reports.emit import ReportTargets, write_reports
    from ..reports.json_report import build_report

    old_report = load_baseline_flag(baseline)
    targets = ReportTargets(output, junit_xml, markdown, json_flag="-o")
    targets.check(reads=[*reports, baseline])  # -o over one of the shard reports would destroy it
    results, environment = merge_files(reports)
    report = build_report(results, environment)
    regressions = attach(report, old_report, baseline)
    for line in write_reports(results, report, targets):
        err(line)
    render_results(results, report, fmt, quiet, verbose)
    if not quiet:
        err(f"lrpaudit: merged {len(reports)} shard reports into {output}")
    failed = verdict_of(results, regressions)
    sys.exit(EXIT_FAIL if failed and not exit_zero else EXIT_OK)
