"""Error types that carry the CLI exit code, so bad input never surfaces as a traceback."""

from __future__ import annotations


class LrpauditError(Exception):
    """Base class: a user-facing problem with a one-line message and an exit code."""

    exit_code = 2


class ModelError(LrpauditError):
    """The model file cannot be read, is malformed, or uses an op lrpaudit does not support."""


class UnsupportedOpError(ModelError):
    """An op with no IR mapping or no LRP rule: refused loudly, never a gradient fallback."""


class FidelityError(ModelError):
    """The IR forward does not compute the same function as the reference runtime."""


class ConfigError(LrpauditError):
    """The rule configuration is invalid."""


class InputError(LrpauditError):
    """Sample inputs do not fit the model."""


class OutputError(LrpauditError):
    """A report or artefact cannot be written (missing folder, no permission, disk full)."""


class InternalError(Exception):
    """A fault in lrpaudit itself (e.g. a converter whose IR does not reproduce its op): deliberately not an
    LrpauditError, so the command reports it as a bug (exit 3, traceback saved), never as a problem of the model."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type name if it has none.

    Library errors (onnx, torch, numpy) can be pages long; a one-line error message quotes only this.
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
