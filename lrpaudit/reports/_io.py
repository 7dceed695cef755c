"""Writing artefacts safely: paths checked before a long audit, every file written all or nothing, and several
files committed together (:class:`Staging`): when one of them cannot be written, none is left behind.

A report path must be a regular file or not exist yet: a folder, a FIFO, a device (``/dev/null``, ``/dev/tty``) or
a link to one is refused (writing renames a temp file over the path, which would replace the device node or the
pipe by a regular file). Temp files live next to their target (same filesystem, so the rename is atomic) under a
short name of their own (``.lrpaudit-<start of name>.XXXX.tmp``), so a target name of up to 255 bytes still works.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
from pathlib import Path

from ..errors import OutputError
from ..files import special_kind


def check_writable(path, folders_made: bool = False) -> None:
    """Fail before a long audit when ``path`` cannot be written: a folder, FIFO or device in its place (or a link
    to one), a name too long for the filesystem, or a missing or read-only folder (``folders_made``: the writer
    creates missing folders itself)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a folder")
        kind = special_kind(path)
        if kind is not None:
            raise OutputError(f"cannot write {path}: it is {kind}; reports are written as regular files")
        folder = path.parent
        while folders_made and not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"cannot write {path}: no such folder {folder}")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"cannot write {path}: folder {folder} is not writable")
        limit = _name_limit(folder)
        if len(os.fsencode(path.name)) > limit:
            raise OutputError(f"cannot write {path}: the file name is longer than {limit} bytes")
    except OSError as exc:  # e.g. ENAMETOOLONG for the whole path, ELOOP
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not POSIX
        return 255


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
    with Staging() as staging:
        staging.write(path, write, check)
        staging.commit()
    return Path(path)


class Staging:
    """Several files written as one, as a context manager.

    :meth:`write` puts each file into a temp file next to its target; :meth:`commit` renames them all into place,
    keeping a hard link to each file it replaced. Leaving the block normally makes that final (the old copies go);
    leaving it by an exception (a full disk, a failed rename, a failure after the commit such as the GitHub job
    summary, Ctrl-C, SIGTERM) discards the temp files and puts back what the renames replaced (the old file, or
    no file): nothing that was asked for is left half done.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Path, str]] = []  # (target, temp file), written, not renamed yet
        self.renamed: list[tuple[Path, str | None]] = []  # (target, what it replaced: a backup, or None)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self._finish()
        else:
            self.rollback()

    def write(self, path, write, check=None) -> None:
        """Write one file's temp copy (``write(binary_file)``; ``check(temp_path)`` may refuse it)."""
        path = Path(path)
        check_writable(path)
        try:
            mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
            handle, tmp = tempfile.mkstemp(
                prefix=f".lrpaudit-{path.name[:32]}.", suffix=".tmp", dir=path.parent
            )
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self.pending.append((path, tmp))
        try:
            with os.fdopen(handle, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            if check is not None:
                check(Path(tmp))
            os.chmod(tmp, mode)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def commit(self) -> None:
        """Rename every temp file over its target (a failed rename raises; the block's exit undoes the others).

        Ctrl-C and SIGTERM are held back while the files are renamed (a few system calls): they take effect
        right after, never between two renames.
        """
        with _signals_held():
            while self.pending:
                path, tmp = self.pending[0]
                backup = _keep_old(path)
                try:
                    os.replace(tmp, path)
                except BaseException as exc:
                    _drop_backup(path, backup)
                    if isinstance(exc, OSError):
                        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
                    raise
                self.pending.pop(0)
                self.renamed.append((path, backup))

    def rollback(self) -> None:
        """Remove the temp files and put back what the renames replaced."""
        self._discard_pending()
        for path, backup in reversed(self.renamed):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                else:
                    os.unlink(path)
        self.renamed = []

    def _finish(self) -> None:
        self._discard_pending()  # written but never committed: not asked to be kept
        for _, backup in self.renamed:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup)
        self.renamed = []

    def _discard_pending(self) -> None:
        for _, tmp in self.pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.pending = []


def _drop_backup(path: Path, backup: str | None) -> None:
    """After a failed rename: the old file is still in place (or, moved aside, is put back)."""
    if backup is None:
        return
    with contextlib.suppress(OSError):
        if path.exists():
            os.unlink(backup)
        else:
            os.replace(backup, path)


@contextlib.contextmanager
def _signals_held():
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _keep_old(path: Path) -> str | None:
    """A hard link to the file at ``path`` (to put back if a later rename fails), or None if there is none."""
    if not path.exists():
        return None
    backup = tempfile.mktemp(prefix=f".lrpaudit-{path.name[:32]}.", suffix=".old", dir=path.parent)
    try:
        os.link(path, backup)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        os.replace(path, backup)  # no hard links here: move the old file aside instead
    return backup


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
