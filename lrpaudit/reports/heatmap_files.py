"""``--heatmaps DIR``: one PNG per sample and image input, in the LRP convention (see :mod:`.heatmaps`).

File names are ``<model stem>.<input>.sample<index>.png`` (prefixed by the run's number when one command audits
several runs, so that names never collide). With the input arrays at hand, an overlay on the input is written
next to each map (``... .overlay.png``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import OutputError
from . import heatmaps
from ._io import atomic_write
from .plots import png_bytes, upscale_for


def heatmap_files(results) -> list[tuple[str, bytes]]:
    """(file name, PNG bytes) of every heatmap the runs give (with overlays where the inputs were kept)."""
    files = []
    for number, result in enumerate(results, start=1):
        prefix = f"{number:02d}-" if len(results) > 1 else ""
        for picture in heatmaps.pictures(result):
            scale = upscale_for(picture.scaled.shape)
            name = prefix + heatmaps.file_name(result.model_path, picture)
            files.append((name, png_bytes(heatmaps.colours(picture.scaled), scale)))
            if picture.background is not None:
                overlay = png_bytes(heatmaps.colours(picture.scaled, picture.background), scale)
                files.append((name.removesuffix(".png") + ".overlay.png", overlay))
    return files


def write_heatmaps(folder: Path, files: list[tuple[str, bytes]]) -> list[Path]:
    """Write the PNGs into ``folder`` (made if missing), each file all or nothing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write heatmaps to {folder}: {exc.strerror or exc}") from exc
    return [atomic_write(folder / name, lambda out, data=data: out.write(data)) for name, data in files]
