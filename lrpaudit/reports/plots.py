"""Pictures drawn with matplotlib (the optional extra ``lrpaudit[plots]``): heatmap PNGs and the conservation plot.

matplotlib is imported only when a picture is asked for, with its object API (no pyplot state, the Agg canvas),
so the rest of lrpaudit never needs it; a missing install is one line naming the extra (exit 2).
"""

from __future__ import annotations

import io

import numpy as np

from ..display import safe
from ..errors import InputError
from .conservation import Conservation

# Category colours of the stacked leak bars (the unexplained residual stands out in black).
CATEGORY_COLOURS = {
    "absorbed_bias": "#e69f00",
    "absorbed_stabilizer": "#56b4e9",
    "absorbed_softmax": "#009e73",
    "degenerate": "#cc79a7",
    "residual": "#000000",
}
MAX_LABELS = 40  # beyond this many nodes the x axis shows every k-th node id


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_matplotlib() -> None:
    """Raise the one-line error naming the extra when matplotlib is missing."""
    _matplotlib()


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(
            "pictures need matplotlib: pip install 'lrpaudit[plots]' (or pip install matplotlib)"
        ) from None
    return matplotlib, Figure, FigureCanvasAgg


def png_bytes(rgba: np.ndarray, upscale: int = 1) -> bytes:
    """PNG bytes of an RGBA image (see :func:`.heatmaps.colours`), each pixel repeated ``upscale`` times so that
    small inputs stay visible."""
    _matplotlib()
    from matplotlib import image as mpimage

    if upscale > 1:
        rgba = np.repeat(np.repeat(rgba, upscale, axis=0), upscale, axis=1)
    buffer = io.BytesIO()
    mpimage.imsave(buffer, rgba, format="png")
    return buffer.getvalue()


def upscale_for(shape: tuple[int, ...], target: int = 160) -> int:
    """How many times to repeat pixels so that the longer side is at least ``target`` pixels."""
    return max(1, target // max(shape))


def conservation_png(figures: Conservation, title: str, dpi: int = 100) -> bytes:
    """The conservation plot: relevance in flight from output to input (mean and range over samples) above, the
    leak per node stacked by category (mean share of the explained score) below."""
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    with matplotlib.rc_context({"text.parse_math": False}):  # node ids are data: "$" must not start mathtext
        return _conservation_png(figures, safe(title), dpi, Figure, FigureCanvasAgg)


def _conservation_png(figures: Conservation, title: str, dpi: int, Figure, FigureCanvasAgg) -> bytes:
    figure = Figure(figsize=(9.0, 5.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(1.2, 1.0))
    steps = np.arange(len(figures.labels) + 1)
    if figures.samples:
        top.fill_between(steps, figures.remaining.min(axis=0), figures.remaining.max(axis=0), color="#c6dbef",
                         step="post", label="range over samples")  # fmt: skip
    top.step(steps, figures.mean_remaining, where="post", color="#08519c", label="mean")
    top.axhline(1.0, color="#888888", linewidth=0.8, linestyle=":")
    top.set_ylabel("relevance in flight\n(fraction of the score)")
    top.set_title(title, fontsize=10, loc="left")
    top.legend(loc="lower left", fontsize=8)
    positions = np.arange(len(figures.labels)) + 0.5
    up = np.zeros(len(figures.labels))
    down = np.zeros(len(figures.labels))
    for key, share in figures.mean_shares().items():
        if not np.any(share):
            continue
        base = np.where(share >= 0, up, down)
        bottom.bar(positions, share, width=0.8, bottom=base, color=CATEGORY_COLOURS.get(key, "#999999"),
                   label=figures.category_label(key))  # fmt: skip
        up, down = up + np.clip(share, 0, None), down + np.clip(share, None, 0)
    bottom.axhline(0.0, color="#888888", linewidth=0.8)
    bottom.set_ylabel("leak per node\n(fraction of the score)")
    handles, labels = bottom.get_legend_handles_labels()
    if handles:
        bottom.legend(loc="best", fontsize=8)
    every = max(1, -(-len(figures.labels) // MAX_LABELS))
    bottom.set_xticks(
        positions[::every], [label[-28:] for label in figures.labels[::every]], rotation=90, fontsize=7
    )
    bottom.set_xlabel("node, in propagation order (output -> input)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
