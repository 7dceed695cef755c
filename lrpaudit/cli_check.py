"""`lrpaudit check`: the CI gate. Parses flags, runs the audit per model, writes the chosen reports."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
from rich.console import Console

from .cli import EXIT_FAIL, EXIT_OK, _err, _parse_shape, guarded, main
from .errors import InputError, OutputError


def _target(value: str | None):
    if value is None or value in ("pred", "predicted"):
        return None if value is None else "predicted"
    try:
        return int(value)
    except ValueError as exc:
        raise click.BadParameter(f"--target must be 'pred' or a class index, got {value!r}") from exc


def _input_shapes(model, text: str | None):
    shapes = _parse_shape(text)
    if shapes and "*" in shapes:
        shapes = {model.input_names[0]: shapes["*"]}
    return shapes


def _save_relevance(path: Path, relevance: dict[str, np.ndarray]) -> None:
    """Atomic .npz write: a temp file in the same folder, then rename; an OS failure is an OutputError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(handle)
    try:
        with open(tmp, "wb") as out:
            np.savez(out, **relevance)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Progress:
    """Progress on stderr: a rich bar on a terminal, one plain line per batch otherwise (CI logs)."""

    def __init__(self, label: str, total: int | None, quiet: bool) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.bar = None
        if self.tty:
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(label, total=total)
            self.bar.start()

    def __call__(self, done: int, size: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
        elif not self.quiet:
            of = f"/{self.total}" if self.total else ""
            _err(f"lrpaudit: {self.label}: {done}{of} samples")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_one(model_path: Path, options: dict):
    """Load the model and config, assign rules, audit; returns the AuditResult."""
    from .api import audit
    from .config import load_config
    from .frontends import load_model
    from .inputs import peek_shapes, random_batches
    from .passes import strip_output_softmax

    config = load_config(options["config"], options["preset"])
    # Formats that declare no input shapes (TorchScript) take them at load time.
    model = load_model(model_path, _parse_shape(options["input_shape"]))
    if (
        options["input_shape"] is None
        and options["inputs"] is not None
        and hasattr(model, "set_input_shapes")
    ):
        try:
            model.declared_shapes()
        except InputError:  # a scripted archive records no example input: take the shape from the inputs
            model.set_input_shapes(peek_shapes(options["inputs"], model.input_names))
    shapes = _input_shapes(model, options["input_shape"])
    probe = next(iter(random_batches(model.declared_shapes(), 1, 1, 0, shapes)))
    graph = model.graph({name: a.shape for name, a in probe.arrays.items()})
    explain = config.explain
    if explain == "logits":
        graph = strip_output_softmax(graph)
    assignment = config.assign(graph)
    for warning in assignment.warnings:
        _err(f"lrpaudit: warning: {warning}")
    dtype = options["dtype"] or config.dtype
    target = options["target"] if options["target"] is not None else config.target
    tolerance = config.tolerance(graph)
    if options["gate"]:
        tolerance.gate = options["gate"]
    if options["inputs"] is None and not options["random"]:
        raise InputError("no inputs: give --inputs PATH or --random N")
    progress = _Progress(str(model_path), options["random"], options["quiet"])
    try:
        result = audit(
            model,
            assignment.rules,
            options["inputs"],
            random=options["random"],
            seed=options["seed"],
            batch_size=options["batch_size"],
            init=config.init,
            target=None if target == "predicted" else target,
            dtype=dtype,
            device=options["device"],
            tolerance=tolerance,
            explain=explain,
            verify=options["verify_rules"],
            keep_relevance=options["save_relevance"] is not None,
            rule_sources=assignment.sources,
            input_shapes=shapes,
            on_batch=progress,
            allow_empty=options.get("allow_empty", False),
        )
    finally:
        progress.close()
    vacuous = sum(sample.nothing_to_explain for sample in result.samples)
    if vacuous:  # never a silent pass: say so even with -q or --format json
        _err(
            f"lrpaudit: warning: {model_path}: {vacuous} of {len(result.samples)} samples have nothing to explain "
            "(the explained output is exactly 0)"
        )
    result.config = {
        "name": config.name,
        "path": str(config.path) if config.path else None,
        "sha256": config.sha256,
        "resolved": config.resolved(),
    }
    return result


@main.command()
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), help="YAML rule config.")
@click.option("--preset", help="Preset name instead of a config file (see `lrpaudit presets`).")
@click.option("--inputs", type=click.Path(path_type=Path), help=".npy, .npz or a folder of them.")
@click.option("--random", "random_n", type=click.IntRange(min=1), help="Audit N seeded random samples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--input-shape", help="Shape for dynamic dims / TorchScript inputs, e.g. 1,3,32,32.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
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
@click.option("--save-relevance", type=click.Path(path_type=Path), help="Save input relevance maps (.npz).")
@click.option(
    "--baseline", type=click.Path(path_type=Path), help="Fail only on regressions against this report."
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
@click.option("-v", "--verbose", is_flag=True, help="Wide table with every accounting column.")
@click.option("-q", "--quiet", is_flag=True, help="Only the one-line verdict on stderr.")
@guarded
def check(
    models,
    config_path,
    preset,
    inputs,
    random_n,
    seed,
    input_shape,
    batch_size,
    dtype,
    device,
    target,
    gate,
    json_report,
    junit_xml,
    markdown,
    fmt,
    save_relevance,
    baseline,
    verify_rules,
    exit_zero,
    allow_empty,
    verbose,
    quiet,
):
    """Audit LRP conservation of each MODEL; exit 0 pass, 1 fail, 2 bad input, 3 internal error."""
    from .reports import github
    from .reports import json_report as json_reports
    from .reports._common import check_writable
    from .reports.junit import write_junit
    from .reports.markdown import build_markdown, write_markdown
    from .reports.table import render_checks, render_layers, render_samples, summary_line

    if config_path and preset:
        raise click.UsageError("give either -c/--config or --preset, not both")
    if inputs is not None and random_n:
        raise click.UsageError("give either --inputs or --random, not both")
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {device!r}", param_hint="'--device'")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    options = {
        "config": config_path,
        "preset": preset if preset or config_path else "epsilon-plus-flat",
        "inputs": inputs,
        "random": random_n,
        "seed": seed,
        "input_shape": input_shape,
        "batch_size": batch_size,
        "dtype": dtype,
        "device": device,
        "target": _target(target),
        "gate": gate,
        "verify_rules": verify_rules,
        "save_relevance": save_relevance,
        "quiet": quiet,
        "allow_empty": allow_empty,
    }
    old_report = None
    if baseline is not None:  # a bad baseline is a usage error: say so before auditing anything
        from .reports.baseline import compare, load_baseline

        old_report = load_baseline(baseline)
    for output in (json_report, junit_xml, markdown):  # an unwritable report fails before the audit
        if output is not None:
            check_writable(output)
    if save_relevance is not None:
        check_writable(save_relevance, folders_made=True)
    results = [run_one(path, options) for path in models]
    report = json_reports.build_report(results)
    regressions = None
    if old_report is not None:
        regressions = compare(report, old_report)
        regressions.source = str(baseline)
        report["baseline"] = regressions.as_dict()
    if save_relevance is not None:
        for result in results:
            target_path = save_relevance
            if len(results) > 1:
                target_path = save_relevance.with_name(
                    f"{save_relevance.stem}.{Path(result.model_path).stem}.npz"
                )
            _save_relevance(target_path, result.relevance)
    if json_report:
        json_reports.write_json(report, json_report)
    if junit_xml:
        write_junit(results, junit_xml)
    summary_md = build_markdown(results)
    if markdown:
        write_markdown(results, markdown)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github.annotations(results):
            click.echo(line, err=True)
        github.append_step_summary(summary_md)
    if fmt == "json":
        click.echo(json_reports.to_json_text(report))
    elif not quiet:
        console = Console(width=None if sys.stdout.isatty() else (230 if verbose else 100))
        for result in results:
            render_layers(result, console, verbose=verbose)
            if verbose:
                render_samples(result, console)
            render_checks(result, console)
            for note in result.notes:
                console.print(f"note: {note}", highlight=False)
    for result in results:
        _err(summary_line(result))
    failed = any(r.verdict != "pass" for r in results)
    if regressions is not None:
        for line in regressions.describe():
            _err(f"lrpaudit: baseline: {line}")
        failed = regressions.failed
    if failed and not exit_zero:
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_OK)
