"""What every command shares: exit codes, the exit policy (``guarded``), stderr lines, shared options, progress.

Imports stay light (click only; rich when a progress bar is drawn): ``lrpaudit --help`` and usage errors must not
pay for torch, onnx or onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import click

from ..display import one_line, safe
from ..errors import LrpauditError, first_line

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed
EXIT_TERMINATED = 143  # 128 + SIGTERM (CI cancelling a job, `timeout`, `kill`)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread where it arrives, so that it unwinds like Ctrl-C: every report being
    written is taken back (nothing half-written), and the command exits 143."""


def _terminate(signum, frame):
    raise Terminated


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings (a library's, or a model's ``torch.warn``) as one escaped stderr line."""
    err(f"lrpaudit: warning: {category.__name__}: {message}")


OUT_OF_MEMORY = "lrpaudit: error: out of memory: lower --batch-size, or audit smaller inputs"


def err(message: str) -> None:
    """One line on stderr (:func:`lrpaudit.display.one_line`): every stderr line of lrpaudit passes here, and a
    name or path read from a file may hold ESC sequences, a newline plus ``::error``, bidi controls."""
    click.echo(one_line(message), err=True)


def guarded(fn):
    """Turn every failure into a one-line message and the documented exit code, never a bare traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        shown, warnings.showwarning = warnings.showwarning, _show_warning
        previous = _catch_sigterm()
        try:
            return fn(*args, **kwargs)
        except LrpauditError as exc:
            err(f"lrpaudit: error: {exc}")
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader went away (`lrpaudit rules | head`): stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except KeyboardInterrupt:
            err("lrpaudit: interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except Terminated:
            err("lrpaudit: terminated (SIGTERM)")
            sys.exit(EXIT_TERMINATED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError:  # a limit, not a bug
            err(OUT_OF_MEMORY)
            sys.exit(EXIT_USAGE)
        except OSError as exc:
            if exc.filename is None:  # no file named: nothing the user can fix, a bug
                err(_internal(exc))
                sys.exit(EXIT_INTERNAL)
            # a file the user named that the system refuses (a name too long, a loop of links, no permission)
            err(f"lrpaudit: error: {exc.filename}: {exc.strerror or exc}")
            sys.exit(EXIT_USAGE)
        except Exception as exc:  # a bug: short message, traceback to a file
            if _out_of_memory(exc):
                err(OUT_OF_MEMORY)
                sys.exit(EXIT_USAGE)
            err(_internal(exc))
            sys.exit(EXIT_INTERNAL)
        finally:
            _restore_sigterm(previous)
            warnings.showwarning = shown

    return wrapper


def _internal(exc: BaseException) -> str:
    first = first_line(exc) if str(exc).strip() else ""
    return f"lrpaudit: internal error: {type(exc).__name__}: {first} ({_save_traceback()}; please report it)"


def _catch_sigterm():
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only); returns the old handler."""
    try:
        return signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError, AttributeError):  # not the main thread (a test runner's worker)
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, previous)


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


# ------------------------------------------------------------------------------------------ shared options


def _shape_option(ctx, param, value):
    if value is None:  # not given: nothing to parse, and nothing imported (usage errors stay instant)
        return None
    from ..inputs.shapes import ShapeTextError, parse_shape

    try:
        return parse_shape(value)
    except ShapeTextError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def input_shape_option(fn):
    """``--input-shape``: concrete shapes for dynamic dims and TorchScript inputs (parsed to a dict)."""
    return click.option(
        "--input-shape",
        "input_shapes",
        default=None,
        callback=_shape_option,
        help="Shape for dynamic dims / TorchScript inputs, e.g. 1,3,32,32 (or name=1,3,32,32;name2=...).",
    )(fn)


def trust_code_option(fn):
    """``--trust-code``: load a TorchScript archive whose code fails the pre-load check (README: Security)."""
    return click.option(
        "--trust-code",
        is_flag=True,
        help="Load TorchScript archives even if their code defines __setstate__ or calls file, process or "
        "network ops (it runs that code).",
    )(fn)


def _shard_option(ctx, param, value):
    if value is None:
        return None
    from ..inputs.sharding import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def shard_option(fn):
    """``--shard I/N``: audit the I-th of N disjoint slices of the samples (parsed to a Shard)."""
    return click.option(
        "--shard",
        default=None,
        callback=_shard_option,
        metavar="I/N",
        help="Audit only shard I of N (whole batches, round robin; merge the reports with `lrpaudit merge`).",
    )(fn)


def config_options(fn):
    """``-c/--config`` and ``--preset``, which exclude each other (see :func:`one_config`)."""
    fn = click.option("--preset", help="Preset name instead of a config file (see `lrpaudit presets`).")(fn)
    return click.option(
        "-c", "--config", "config_path", type=click.Path(path_type=Path), help="YAML rule config."
    )(fn)


def one_config(config_path, preset) -> None:
    if config_path and preset:
        raise click.UsageError("give either -c/--config or --preset, not both")


class Progress:
    """Progress on stderr: a rich bar on a terminal; otherwise one plain line per step (CI logs), unless ``lines``
    is off (``batch`` prints its own line per run)."""

    def __init__(self, label: str, total: int | None, quiet: bool, unit: str = "samples", lines: bool = True):
        self.label, self.total, self.quiet, self.unit, self.lines = label, total, quiet, unit, lines
        self.bar = None
        if sys.stderr.isatty() and not quiet:
            from rich.console import Console
            from rich.progress import Progress as Bar
            from rich.progress import TextColumn

            # the label is a path: shown as written (never as markup), like every other line
            columns = (TextColumn("{task.description}", markup=False), *Bar.get_default_columns()[1:])
            self.bar = Bar(*columns, console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(safe(label), total=total)
            self.bar.start()

    def __call__(self, done: int, size: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
        elif not self.quiet and self.lines:
            of = f"/{self.total}" if self.total else ""
            err(f"lrpaudit: {self.label}: {done}{of} {self.unit}")

    def log(self, line: str) -> None:
        """One stderr line; above the bar while a bar is drawn."""
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            err(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def render_results(results, report: dict, fmt: str, quiet: bool, verbose: bool) -> None:
    """stdout: the JSON report (``--format json``), else each run's tables and notes (nothing with ``-q``);
    stderr: each run's one-line verdict."""
    from ..reports.json_report import to_json_text
    from ..reports.table import render_checks, render_layers, render_notes, render_samples, summary_line

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


def stdout_console(verbose: bool = False):
    """The rich console for tables on stdout: the terminal's width, else 100 columns (260 with -v)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else (260 if verbose else 100))


def load_baseline_flag(baseline):
    """``--baseline``: the report, read and checked before any audit (a bad one is a usage error), or None."""
    if baseline is None:
        return None
    from ..reports.baseline import load_baseline

    return load_baseline(baseline)


def verdict_of(results, regressions) -> bool:
    """Whether the command failed: a run failed, or with ``--baseline`` a regression (printed on stderr)."""
    if regressions is None:
        return any(result.verdict != "pass" for result in results)
    for line in regressions.describe():
        err(f"lrpaudit: baseline: {line}")
    return regressions.failed
