"""Checks on a TorchScript archive's zip entries, made before ``torch.jit.load``: nothing is ever unpickled.

A pickle written by ``torch.save`` (a state_dict or a whole ``nn.Module``), a ``torch.export`` archive and a
damaged zip are each named for what they are.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ...errors import ModelError

EXPORT_HINT = (
    "export the model instead: torch.jit.trace(model.eval(), example).save('model.pt') (or torch.jit.script), "
    "or torch.onnx.export(model.eval(), (example,), 'model.onnx')"
)


def check_archive(path: Path) -> bool:
    """Refuse anything that is not a TorchScript zip archive, by its entry names alone (nothing is unpickled).

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
            names = archive.namelist()
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
    return f"{root}/traced_inputs.pkl" in names
