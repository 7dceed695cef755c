"""Checks on a TorchScript archive's zip entries, made before ``torch.jit.load``: nothing is ever unpickled, and
nothing runs until the code has been read.

A pickle written by ``torch.save`` (a state_dict or a whole ``nn.Module``), a ``torch.export`` archive and a
damaged zip are each named for what they are. Bounded work: the zip's *declared* sizes are checked before any
entry is inflated, and torch allocates what they declare, so they bound what it reads too. torch writes tensors
stored (uncompressed: an entry the size of its bytes in the file) and code deflated; an entry that would inflate to
more than ``MAX_RATIO`` times its compressed size (over 1 MiB), inflated entries that declare more than
``MAX_INFLATED`` bytes in all, or more than ``MAX_ENTRIES`` entries, are refused as a zip bomb. Then every
``.py`` entry is read (at most ``MAX_CODE`` bytes) and checked by :mod:`.code_check`, unless the caller trusts
the code (``--trust-code``).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from ...errors import ModelError
from .code_check import check_code

MAX_ENTRIES = 500_000
MAX_RATIO = 100
MAX_INFLATED = 256 * 2**20
MAX_CODE = 64 * 2**20
_SMALL = 2**20

EXPORT_HINT = (
    "export the model instead: torch.jit.trace(model.eval(), example).save('model.pt') (or torch.jit.script), "
    "or torch.onnx.export(model.eval(), (example,), 'model.onnx')"
)


def check_archive(path: Path, trust_code: bool = False) -> bool:
    """Refuse anything that is not a TorchScript zip archive, by its entry names alone (nothing is unpickled), a
    zip bomb by its declared sizes, and code that does more than compute (see :mod:`.code_check`) unless
    ``trust_code``.

    Returns whether the archive holds the example inputs of a trace (``traced_inputs.pkl``).
    """
    try:
        is_zip = zipfile.is_zipfile(path)
    except Exception as exc:
        # E.g. a damaged end record that claims several disks.
        raise ModelError(f"{path}: is not a readable zip archive ({type(exc).__name__}: {exc})") from exc
    if not is_zip:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:1] == b"\x80":
            raise ModelError(
                f"{path}: is a legacy torch.save pickle, not a TorchScript archive; lrpaudit never loads pickles: "
                + EXPORT_HINT
            )
        raise ModelError(
            f"{path}: is not a TorchScript archive (not a zip file; truncated or another format)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            names = [entry.filename for entry in entries]
            _check_sizes(path, entries)
            sources = None if trust_code else _read_code(path, archive, entries)
    except ModelError:
        raise
    except Exception as exc:
        # zipfile also raises UnicodeDecodeError, NotImplementedError ... on damaged headers.
        raise ModelError(f"{path}: is not a readable zip archive ({type(exc).__name__}: {exc})") from exc
    roots = sorted({name.split("/", 1)[0] for name in names if "/" in name})
    if len(roots) != 1:
        raise ModelError(
            f"{path}: is a zip archive but not a TorchScript archive (expected one top folder, found {roots})"
        )
    root = roots[0]
    if f"{root}/archive_format" in names or any(name.startswith(f"{root}/models/") for name in names):
        raise ModelError(
            f"{path}: is a torch.export archive (.pt2), not a TorchScript model; lrpaudit reads TorchScript and "
            "ONNX: torch.onnx.export(model.eval(), (example,), 'model.onnx')"
        )
    has_code = any(name.startswith(f"{root}/code/") for name in names)
    has_constants = f"{root}/constants.pkl" in names
    has_data = f"{root}/data.pkl" in names
    if has_data and not has_code:
        raise ModelError(
            f"{path}: is a torch.save archive (a pickled state_dict or nn.Module: data.pkl without code/), not a "
            "TorchScript model; lrpaudit never loads pickles: " + EXPORT_HINT
        )
    missing = [
        entry
        for entry, present in (
            (f"{root}/code/", has_code),
            (f"{root}/constants.pkl", has_constants),
            (f"{root}/data.pkl", has_data),
        )
        if not present
    ]
    if missing:
        raise ModelError(
            f"{path}: is a zip archive but not a complete TorchScript archive (missing {', '.join(missing)})"
        )
    if sources is not None:
        findings = check_code(sources)
        if findings:
            more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
            raise ModelError(
                f"{path}: refused before loading: its code {findings[0]}{more}; a TorchScript archive is a "
                "program that torch runs: pass --trust-code only for archives you trust (README: Security)"
            )
    return f"{root}/traced_inputs.pkl" in names


def _check_sizes(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip bomb by the sizes the zip declares, before anything is inflated."""
    if len(entries) > MAX_ENTRIES:
        raise ModelError(f"{path}: the archive has {len(entries):,} entries (the limit is {MAX_ENTRIES:,})")
    archive_size = path.stat().st_size
    inflated = 0
    for entry in entries:
        if entry.compress_type == zipfile.ZIP_STORED:
            if entry.file_size != entry.compress_size or entry.file_size > archive_size:
                raise ModelError(
                    f"{path}: entry {entry.filename!r} declares {entry.file_size:,} bytes stored in "
                    f"{entry.compress_size:,} (a damaged or forged archive)"
                )
            continue
        inflated += entry.file_size
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _SMALL and ratio > MAX_RATIO:
            raise ModelError(
                f"{path}: entry {entry.filename!r} would inflate {entry.compress_size:,} bytes to "
                f"{entry.file_size:,} ({ratio:,.0f}:1; the limit is {MAX_RATIO}:1): refused as a zip bomb"
            )
        if inflated > MAX_INFLATED:
            raise ModelError(
                f"{path}: its compressed entries would inflate to over {MAX_INFLATED // 2**20} MiB (the limit): "
                "refused as a zip bomb"
            )


def _read_code(path: Path, archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo]) -> dict[str, str]:
    """Every ``.py`` entry's text, at most ``MAX_CODE`` bytes in all (sizes were checked: reads are bounded)."""
    sources: dict[str, str] = {}
    total = 0
    for entry in entries:
        if not entry.filename.endswith(".py"):
            continue
        total += entry.file_size
        if total > MAX_CODE:
            raise ModelError(f"{path}: its code entries hold over {MAX_CODE // 2**20} MiB (the limit)")
        try:
            with archive.open(entry) as handle:
                data = handle.read(entry.file_size + 1)
            sources[entry.filename] = data[: entry.file_size].decode("utf-8")
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            UnicodeDecodeError,
            NotImplementedError,
        ) as exc:
            raise ModelError(
                f"{path}: code entry {entry.filename!r} cannot be read ({type(exc).__name__}), so it cannot be "
                "checked"
            ) from exc
    return sources
