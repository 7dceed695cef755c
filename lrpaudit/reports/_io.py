"""Writing artefacts safely: paths checked before a long audit, every file written all or nothing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import OutputError


def check_writable(path, folders_made: bool = False) -> None:
    """Fail before a long audit when ``path`` cannot be written: a folder in its place, or a missing or read-only
    folder (``folders_made``: the writer creates missing folders itself)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    folder = path.parent
    while folders_made and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write {path}: folder {folder} is not writable")


def atomic_write_text(path, text: str, check=None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` all or nothing (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda out: out.write(data), check)


def atomic_write(path, write, check=None) -> Path:
    """Write ``path`` all or nothing: ``write(binary_file)`` into a temp file in the same folder, fsync, then
    ``os.replace``; ``check(temp_path)``, if given, may refuse the written file by raising before the rename.

    A failure at any point removes the temp file and leaves an existing ``path`` untouched. Folders are not
    created: a missing folder is the user's typo, reported as :class:`OutputError` (exit 2).
    """
    path = Path(path)
    folder = path.parent
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if check is not None:
            check(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
