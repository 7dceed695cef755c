"""``lrpaudit check``: the CI gate. Parses flags into one AuditRequest, audits each model, writes and renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import (
    EXIT_FAIL,
    EXIT_OK,
    Progress,
    config_options,
    err,
    guarded,
    input_shape_option,
    one_config,
    shard_option,
    stdout_console,
    trust_code_option,
)


def _target(value: str | None):
    if value is None or value in ("pred", "predicted"):
        return None if value is None else "predicted"
    try:
        return int(value)
    except ValueError as exc:
        raise click.BadParameter(f"--target must be 'pred' or a class index, got {value!r}") from exc


@click.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path(path_type=Path))
@config_options
@click.option("--inputs", type=click.Path(path_type=Path), help=".npy, .npz or a folder of them.")
@click.option("--random", "random_n", type=click.IntRange(min=1), help="Audit N seeded random samples.")
@click.option("--seed", type=int, default=0, show_default=True)
@input_shape_option
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@shard_option
@click.option(
    "--dtype", type=click.Choice(["float64", "float32"]), help="Propagation dtype (default: config, float64)."
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--target", help="'pred' (predicted class) or a class index.")
@click.option("--gate", type=click.Choice(["strict", "explained"]), help="Override the config's gate.")
@click.option("--json-report", type=click.Path(path_type=Path), help="Write the JSON report here.")
@click.option("--junit-xml", type=click.Path(path_type=Path), help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--save-relevance",
    type=click.Path(path_type=Path),
    help="Save input relevance maps (.npz); token-id inputs per token (the sum over the embedding dimension).",
)
@click.option(
    "--baseline", type=click.Path(path_type=Path), help="Fail only on regressions against this report."
)
@click.option(
    "--fidelity",
    type=click.Choice(["sample", "all", "off"]),
    default="sample",
    show_default=True,
    help="Batches whose IR forward is compared with the model's runtime: the first, the first of each other "
    "batch size and a seeded 1 in 8 of the rest (sample), every batch (all), or none (off; the report says so).",
)
@click.option(
    "--verify-rules", is_flag=True, help="Recompute every rule with dense matrices and report deviations."
)
@click.option(
    "--exit-zero", is_flag=True, help="Exit 0 even when conservation fails (errors still exit 2/3)."
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Accept an audit that checks nothing (no samples, no layers, nothing to explain) instead of exit 2.",
)
@trust_code_option
@click.option("-v", "--verbose", is_flag=True, help="Wide table with every accounting column.")
@click.option("-q", "--quiet", is_flag=True, help="Only the one-line verdict on stderr.")
@guarded
def check(models, config_path, preset, inputs, random_n, seed, input_shapes, batch_size, shard, dtype, device,
          target, gate, json_report, junit_xml, markdown, fmt, save_relevance, baseline, fidelity, verify_rules,
          exit_zero, allow_empty, trust_code, verbose, quiet):  # fmt: skip
    """Audit LRP conservation of each MODEL; exit 0 pass, 1 fail, 2 bad input, 3 internal error."""
    one_config(config_path, preset)  # usage errors first: they answer without loading torch
    if inputs is not None and random_n:
        raise click.UsageError("give either --inputs or --random, not both")
    if shard is not None and baseline is not None:
        raise click.UsageError(
            "--baseline compares a whole audit: give it to `lrpaudit merge` with the shards"
        )
    from ..api import AuditRequest
    from ..reports.emit import ReportTargets, write_reports
    from ..reports.json_report import build_report, to_json_text
    from ..reports.table import render_checks, render_layers, render_notes, render_samples, summary_line

    request = AuditRequest(
        model=None,
        config=config_path,
        preset=preset,
        inputs=inputs,
        random=random_n,
        seed=seed,
        batch_size=batch_size,
        input_shapes=input_shapes,
        dtype=dtype,
        target=_target(target),
        gate=gate,
        device=device,
        fidelity=fidelity,
        verify=verify_rules,
        keep_relevance=save_relevance is not None,
        allow_empty=allow_empty,
        trust_code=trust_code,
        shard=shard,
        on_warning=lambda warning: err(f"lrpaudit: warning: {warning}"),
    )
    old_report = None
    if baseline is not None:  # a bad baseline is a usage error: say so before auditing anything
        from ..reports.baseline import compare, load_baseline

        old_report = load_baseline(baseline)
    targets = ReportTargets(json_report, junit_xml, markdown, save_relevance)
    targets.check(models=models, reads=[*models, config_path, inputs])
    results = [_audit_one(request, path, quiet) for path in models]
    report = build_report(results)
    regressions = None
    if old_report is not None:
        regressions = compare(report, old_report)
        regressions.source = str(baseline)
        report["baseline"] = regressions.as_dict()
    for line in write_reports(results, report, targets):
        err(line)
    if fmt == "json":
        click.echo(to_json_text(report))
    elif not quiet:
        console = stdout_console(verbose)
        for result in results:
            render_layers(result, console, verbose=verbose)
            if verbose:
                render_samples(result, console)
            render_checks(result, console)
            render_notes(result, console)
    for result in results:
        err(summary_line(result))
    failed = any(r.verdict != "pass" for r in results)
    if regressions is not None:
        for line in regressions.describe():
            err(f"lrpaudit: baseline: {line}")
        failed = regressions.failed
    sys.exit(EXIT_FAIL if failed and not exit_zero else EXIT_OK)


def _audit_one(request, path: Path, quiet: bool):
    """One model's audit with a progress display; a warning if some samples had nothing to explain."""
    from dataclasses import replace

    from ..api import run_audit

    progress = Progress(str(path), request.random if request.shard is None else None, quiet)
    try:
        result = run_audit(replace(request.for_model(path), on_batch=progress))
    finally:
        progress.close()
    if result.shard is not None and not quiet:
        err(
            f"lrpaudit: {path}: shard {result.shard.index}/{result.shard.count} holds {len(result.samples)} of "
            f"{result.shard.total_samples} samples (`lrpaudit merge` combines the shards' JSON reports)"
        )
    vacuous = sum(sample.nothing_to_explain for sample in result.samples)
    if vacuous:  # never a silent pass: say so even with -q or --format json
        err(
            f"lrpaudit: warning: {path}: {vacuous} of {len(result.samples)} samples have nothing to explain "
            "(the explained output is exactly 0)"
        )
    return result
