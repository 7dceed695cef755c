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
    load_baseline_flag,
    one_config,
    render_results,
    shard_option,
    trust_code_option,
    verdict_of,
)
from ._settings import merged


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
@click.option("--html", type=click.Path(path_type=Path), help="Write a self-contained HTML report here.")
@click.option(
    "--heatmaps",
    type=click.Path(path_type=Path),
    help="Write one PNG heatmap per sample and image input into this folder (and an overlay on the input).",
)
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
@click.option("--isolated", is_flag=True, help="Ignore lrpaudit.yaml and [tool.lrpaudit] in pyproject.toml.")
@guarded
def check(models, **flags):
    """Audit LRP conservation of each MODEL; exit 0 pass, 1 fail, 2 bad input, 3 internal error.

    Settings not given as flags come from lrpaudit.yaml or [tool.lrpaudit] in pyproject.toml (the nearest, from
    the current folder up); with no inputs anywhere, a small seeded random sample set is audited.
    """
    one_config(flags["config_path"], flags["preset"])  # usage errors first: they answer without loading torch
    if flags["inputs"] is not None and flags["random_n"]:
        raise click.UsageError("give either --inputs or --random, not both")
    if flags["shard"] is not None and flags["baseline"] is not None:
        raise click.UsageError(
            "--baseline compares a whole audit: give it to `lrpaudit merge` with the shards"
        )
    from ..config.project import load_settings

    settings = None if flags.pop("isolated") else load_settings()
    if settings is not None and not flags["quiet"]:
        err(f"lrpaudit: settings from {settings.source}")
    flags = merged(click.get_current_context(), flags, settings)
    if settings is not None:
        flags["layer_rtol"] = settings.get("layer_rtol")
        flags["end_to_end_rtol"] = settings.get("end_to_end_rtol")
    if flags["inputs"] is None and not flags["random_n"]:
        flags["random_n"] = DEFAULT_RANDOM
        if not flags["quiet"]:
            err(
                f"lrpaudit: no inputs given: auditing {DEFAULT_RANDOM} seeded random samples (--random "
                f"{DEFAULT_RANDOM} --seed {flags['seed']}); give real ones with --inputs PATH or inputs: in "
                "lrpaudit.yaml"
            )
    _run(models, **flags)


DEFAULT_RANDOM = 8


def _run(models, config_path, preset, inputs, random_n, seed, input_shapes, batch_size, shard, dtype, device,
         target, gate, json_report, junit_xml, markdown, html, heatmaps, fmt, save_relevance, baseline,
         fidelity, verify_rules, exit_zero, allow_empty, trust_code, verbose, quiet, layer_rtol=None,
         end_to_end_rtol=None):  # fmt: skip
    from ..api import AuditRequest
    from ..reports.baseline import attach
    from ..reports.emit import ReportTargets, write_reports
    from ..reports.json_report import build_report

    targets = ReportTargets(json_report, junit_xml, markdown, save_relevance, html, heatmaps)
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
        keep_relevance=targets.keeps_relevance,
        keep_inputs=html is not None or heatmaps is not None,
        layer_rtol=layer_rtol,
        end_to_end_rtol=end_to_end_rtol,
        allow_empty=allow_empty,
        trust_code=trust_code,
        shard=shard,
        on_warning=lambda warning: err(f"lrpaudit: warning: {warning}"),
    )
    old_report = load_baseline_flag(baseline)  # a bad baseline fails before anything is audited
    targets.check(models=models, reads=[*models, config_path, inputs])
    results = [_audit_one(request, path, quiet) for path in models]
    report = build_report(results)
    regressions = attach(report, old_report, baseline)
    for line in write_reports(results, report, targets):
        err(line)
    render_results(results, report, fmt, quiet, verbose)
    failed = verdict_of(results, regressions)
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
