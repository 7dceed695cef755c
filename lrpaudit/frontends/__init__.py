"""Model-file frontends: a model file -> IR, plus the real runtime as the reference for fidelity checks.

``load_model`` picks the frontend from the file's content, not only its name, and refuses pickles. ``onnx/`` and
``torchscript/`` are one package per format, each with its registry module below its converters. ``_model`` holds
what both model classes share: the per-shape cache of canonical graphs (the one frontend -> passes edge) and the
file hash.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from ..files import check_regular


def load_model(
    path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None, trust_code: bool = False
):
    """Load an ONNX or TorchScript file as a model object with ``graph(shapes)`` and ``reference_outputs``.

    ``input_shapes`` (full shapes by input name, batch included) serves formats that declare none: a TorchScript
    file's ``declared_shapes()`` comes from them (or from the example a traced module recorded). ONNX ignores it.
    ``trust_code`` skips the check of a TorchScript archive's code (``--trust-code``); ONNX files hold no code.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a model file")
    check_regular(path, ModelError, "model file")  # a FIFO would block, /dev/zero never ends
    with open(path, "rb") as handle:
        head = handle.read(4)
    torch_file = head.startswith(b"PK") or path.suffix in (".pt", ".pth", ".ts", ".jit")
    if not torch_file and head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # Named by its magic bytes only: lrpaudit never unpickles a file (unpickling runs arbitrary code).
        raise ModelError(
            f"{path}: is a Python pickle, not an ONNX or TorchScript model; lrpaudit never unpickles files: "
            "export the model with torch.onnx.export or torch.jit.trace"
        )
    if torch_file:
        from .torchscript import load_torchscript

        return load_torchscript(path, input_shapes, trust_code)
    from .onnx import load_onnx

    return load_onnx(path)
