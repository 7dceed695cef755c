"""Reading files the user names, with bounded work: the file type and the size are checked before anything is read.

Every file lrpaudit reads (configs, manifests, baselines, model and input files) is first checked to be a regular
file: a FIFO would block forever, ``/dev/zero`` or ``/dev/urandom`` never end, a socket cannot be read. Files that
are parsed whole (YAML, JSON) are also held to a size limit, so a 50 MB config is refused in a millisecond instead
of being parsed for minutes. The errors name the file, what it is, and the limit.

Files are opened with ``O_NONBLOCK`` and checked again on the open handle (``fstat``), so a file swapped for a FIFO
between the check and the open cannot block either.
"""

from __future__ import annotations

import os
import stat

from .errors import LrpauditError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def special_kind(path) -> str | None:
    """What ``path`` is if it exists and is not a regular file or a folder (a FIFO, a device, a socket); else None.

    Follows symlinks (a link to ``/dev/zero`` is a character device). Never opens the file.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISDIR(mode) else kind_of(mode)


def check_regular(path, error: type[LrpauditError], what: str, prefix: str | None = None) -> None:
    """Raise ``error`` if ``path`` is a FIFO, device or socket (a missing file or a folder is the caller's case)."""
    kind = special_kind(path)
    if kind is not None:
        raise error(f"{prefix or path}: is {kind}, not a {what}; refused")


def read_limited(path, limit: int, error: type[LrpauditError], what: str, prefix: str | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``error`` naming the file otherwise.

    ``FileNotFoundError`` and ``IsADirectoryError`` pass through for the caller's own wording.
    """
    name = prefix or str(path)
    check_regular(path, error, what, prefix)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as exc:
        raise error(f"{name}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(handle, "rb") as stream:
        info = os.fstat(stream.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(str(path))
        kind = kind_of(info.st_mode)
        if kind is not None:
            raise error(f"{name}: is {kind}, not a {what}; refused")
        if info.st_size > limit:
            raise error(
                f"{name}: {info.st_size:,} bytes is over the {_size(limit)} limit for a {what}; refused"
            )
        try:
            data = stream.read(limit + 1)
        except OSError as exc:
            raise error(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:  # the file grew while it was read
        raise error(f"{name}: over the {_size(limit)} limit for a {what}; refused")
    return data


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit:,} bytes"
