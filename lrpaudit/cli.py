"""Command line: parses arguments, calls the API, renders results. No maths here."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import LrpauditError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed


def _err(message: str) -> None:
    click.echo(message, err=True)


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a name read from a damaged file may hold a newline)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def guarded(fn):
    """Turn every failure into a one-line message and the documented exit code, never a bare traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            return fn(*args, **kwargs)
        except LrpauditError as exc:
            _err(f"lrpaudit: error: {one_line(str(exc))}")
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader went away (`lrpaudit rules | head`): stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except KeyboardInterrupt:
            _err("lrpaudit: interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError:  # a limit, not a bug
            _err("lrpaudit: error: out of memory: lower --batch-size, or audit smaller inputs")
            sys.exit(EXIT_USAGE)
        except Exception as exc:  # a bug: short message, traceback to a file
            if _out_of_memory(exc):
                _err("lrpaudit: error: out of memory: lower --batch-size, or audit smaller inputs")
                sys.exit(EXIT_USAGE)
            first = one_line(str(exc).strip().splitlines()[0][:300]) if str(exc).strip() else ""
            _err(
                f"lrpaudit: internal error: {type(exc).__name__}: {first} ({_save_traceback()}; please report it)"
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper


def _out_of_memory(exc: Exception) -> bool:
    """torch reports a failed allocation as a RuntimeError (CPU) or torch.OutOfMemoryError (CUDA)."""
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


def _open_log() -> tuple[int, Path]:
    """``<tmp>/lrpaudit-traceback.txt`` if it is ours and not a link (a shared /tmp may hold a planted symlink),
    else a fresh private temp file."""
    log = Path(tempfile.gettempdir()) / "lrpaudit-traceback.txt"
    try:
        handle = os.open(log, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        if os.fstat(handle).st_uid == os.getuid():
            os.ftruncate(handle, 0)
            return handle, log
        os.close(handle)
    except (OSError, AttributeError):
        pass
    handle, name = tempfile.mkstemp(prefix="lrpaudit-traceback-", suffix=".txt")
    return handle, Path(name)


def _save_traceback() -> str:
    """Write the current traceback to a file of ours; says where (or why it could not)."""
    try:
        handle, log = _open_log()
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(traceback.format_exc())
    except OSError as exc:
        return f"the traceback could not be saved: {exc.strerror or exc}"
    return f"traceback in {log}"


def _parse_shape(text: str | None) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape 1,3,32,32`` or ``name=1,3,32,32``; several separated by ';'."""
    if not text:
        return None
    shapes = {}
    for part in text.split(";"):
        name, _, dims = part.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError as exc:
            raise click.BadParameter(
                f"not a shape: {part!r} (expected e.g. 1,3,32,32)", param_hint="'--input-shape'"
            ) from exc
        if any(d < 1 for d in shape):
            raise click.BadParameter(
                f"not a shape: {part!r} (every dimension must be >= 1)", param_hint="'--input-shape'"
            )
        shapes[name or "*"] = shape
    return shapes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lrpaudit")
def main() -> None:
    """Audit Layer-wise Relevance Propagation for conservation on ONNX and TorchScript model files."""


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--random",
    "random_n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Random samples for the fidelity check.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random.")
@click.option("--input-shape", default=None, help="Concrete input shape for dynamic dims, e.g. 1,3,32,32.")
@click.option(
    "--final-only", is_flag=True, help="Compare only final outputs with the runtime (default: every tensor)."
)
@click.option(
    "-c", "--config", "config_path", type=click.Path(path_type=Path), help="Show the rule each node gets."
)
@click.option("--preset", help="Show the rules of a preset instead of a config file.")
@guarded
def inspect(
    model_path: Path,
    random_n: int,
    seed: int,
    input_shape: str | None,
    final_only: bool,
    config_path: Path | None,
    preset: str | None,
) -> None:
    """Print the canonical IR of MODEL and prove its forward pass against the model's runtime.

    With -c/--preset, each node also shows its rule and the config line that chose it.
    """
    from .api import inspect_model
    from .reports.ir_table import render_fidelity, render_ir

    shapes = _parse_shape(input_shape)
    if shapes and "*" in shapes:
        from .frontends import load_model

        names = load_model(model_path).input_names
        shapes = {names[0]: shapes["*"]}
    if config_path and preset:
        raise click.UsageError("give either -c/--config or --preset, not both")
    model, graph, fidelity = inspect_model(model_path, random_n, seed, not final_only, shapes)
    assignment = None
    if config_path or preset:
        from .config import load_config
        from .passes import strip_output_softmax

        config = load_config(config_path, preset)
        graph = strip_output_softmax(graph) if config.explain == "logits" else graph
        assignment = config.assign(graph)
        for warning in assignment.warnings:
            _err(f"lrpaudit: warning: {warning}")
    render_ir(graph, assignment=assignment)
    render_fidelity(fidelity)
    _err(
        f"lrpaudit: {model_path}: {len(graph.nodes)} IR nodes; forward fidelity {'ok' if fidelity.passed else 'FAILED'}"
    )


@main.command("rules")
@guarded
def rules_command() -> None:
    """List every rule: the ops it applies to, its parameters, its formula and what it conserves."""
    from .rules.spec import BIAS_MODES, RULES

    for spec in RULES.values():
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "none"
        click.echo(f"{spec.name}")
        click.echo(f"  ops:        {', '.join(spec.ops)}")
        click.echo(f"  params:     {params}")
        click.echo(f"  bias modes: {', '.join(BIAS_MODES) if spec.has_bias else '- (no bias term)'}")
        click.echo(f"  formula:    {spec.formula}")
        click.echo(f"  conserves:  {spec.conserves}")


# Command modules register themselves on `main` when imported.
from . import cli_batch, cli_check, cli_config  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
