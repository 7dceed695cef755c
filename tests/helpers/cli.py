"""Running the command line in-process and the assertions every CLI test makes about errors."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from click.testing import CliRunner

from lrpaudit.cli import main

# A CI's GitHub variables must never leak into a test run (they switch on annotations and the job summary).
CLEAN_ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "GITHUB_ACTIONS": None, "GITHUB_STEP_SUMMARY": None}
CLEAN_ENV["GITHUB_WORKSPACE"] = None


def run_cli(*args, env: dict | None = None, cwd: str | Path | None = None):
    """Run ``lrpaudit ARGS`` in-process, stdout and stderr kept apart, in ``cwd`` if given."""
    runner = CliRunner(env={**CLEAN_ENV, **(env or {})})
    with _chdir(cwd):
        return runner.invoke(main, [str(a) for a in args])


@contextlib.contextmanager
def _chdir(folder):
    if folder is None:
        yield
        return
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def assert_clean_error(result, *needles: str) -> str:
    """Exit 2, no traceback, nothing on stdout, an error on stderr mentioning every needle; returns stderr."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    text = result.stderr
    for needle in needles:
        assert needle in text, text
    return text


def assert_one_line_error(result, *needles: str) -> str:
    """As :func:`assert_clean_error`, and stderr is exactly one ``lrpaudit: error:`` line; returns it."""
    text = assert_clean_error(result, *needles)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lrpaudit: error: "), text
    return lines[0]


def words(text: str) -> str:
    """Whitespace-normalized text (a table title wraps when the model path is long)."""
    return " ".join(text.split())
