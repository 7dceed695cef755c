"""The HTML report (``--html PATH``): one self-contained page per command, openable offline from a CI artefact.

Per run: the verdict, the fidelity line, the hints, the conservation plot, the layer table with every accounting
column (failing rows first, the one ranking), the worst samples' heatmaps (image inputs) or per-token relevance
(sequence inputs), and the notes. Pictures are PNGs inside the page as ``data:`` URIs; there is no script, no
external URL, no font or style sheet from a CDN. The page is rendered with jinja2 with autoescaping on, so a name
from a model file is always text, never markup.
"""

from __future__ import annotations

import base64
from pathlib import Path

from .._version import __version__
from ..display import safe
from ..verdicts import ROW_FIELDS, category_share, ordered_rows, severity_then_figure
from . import heatmaps
from ._format import fidelity_line, fmt, model_name, run_label
from ._io import atomic_write_text
from .conservation import conservation

WORST_SAMPLES = 4


def _fields(rows) -> tuple[str, ...]:
    """Every accounting column; the softmax (Taylor) share only for graphs that have one (as the terminal table)."""
    if any(row["rule"] == "taylor" or row["absorbed_softmax"] != 0 for row in rows):
        return ROW_FIELDS
    return tuple(key for key in ROW_FIELDS if key != "absorbed_softmax")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cells(row, fields) -> list[str]:
    largest = row["largest_category"]
    share = f"{largest} {fmt(category_share(row), 2)}%" if largest else "-"
    values = [fmt(row[key]) for key in fields]
    texts = [safe(row[key]) for key in ("id", "op", "rule", "bias_mode")]
    return [*texts, *values, fmt(row["tolerance"]), share, row["verdict"]]


def _worst_positions(result) -> list[int]:
    gate = result.tolerance.gate
    order = sorted(range(len(result.samples)), key=lambda k: severity_then_figure(
        result.samples[k].verdict, result.samples[k].end_to_end(gate)))  # fmt: skip
    return order[:WORST_SAMPLES]


def _fidelity(result) -> str:
    return fidelity_line(result.fidelity, "FAILED", result.fidelity_compared, len(result.samples))


def _summary(result) -> str:
    rows = result.layer_rows()
    failing = sum(row["verdict"] != "pass" for row in rows)
    failed_samples = sum(sample.verdict != "pass" for sample in result.samples)
    tol = result.tolerance
    return (
        f"{failing} of {len(rows)} layers fail, {failed_samples} of {len(result.samples)} samples fail end to end; "
        f"{result.dtype}, {tol.gate} gate (layer_rtol {fmt(tol.layer_rtol)}, end_to_end_rtol "
        f"{fmt(tol.end_to_end_rtol)})"
    )


def _maps(result) -> list[dict]:
    from .plots import png_bytes, upscale_for

    maps = []
    for picture in heatmaps.pictures(result, _worst_positions(result)):
        scale = upscale_for(picture.scaled.shape)
        caption = f"sample {picture.sample}, {safe(picture.input_name)} (|R| scale {fmt(picture.limit)})"
        maps.append({"png": _b64(png_bytes(heatmaps.colours(picture.scaled), scale)), "caption": caption})
        if picture.background is not None:
            overlay = png_bytes(heatmaps.colours(picture.scaled, picture.background), scale)
            maps.append({"png": _b64(overlay), "caption": f"sample {picture.sample}, over the input"})
    return maps


def _tokens(result) -> list[dict]:
    lines = []
    for row in heatmaps.token_rows(result, _worst_positions(result)):
        colours = heatmaps.colours(row.scaled[None, :])[0]
        cells = [
            {
                "label": label,
                "value": f"token {k}: R = {fmt(float(value))}",
                "colour": "#" + "".join(f"{int(c):02x}" for c in colours[k][:3]),
                "ink": "#ffffff" if abs(float(row.scaled[k])) > 0.6 else "#1b1b1b",
            }
            for k, (label, value) in enumerate(zip(row.labels, row.values))
        ]
        caption = f"sample {row.sample}, {safe(row.input_name)} (|R| scale {fmt(row.limit)})"
        lines.append({"caption": caption, "cells": cells})
    return lines


def run_context(result) -> dict:
    """What the template shows of one AuditResult."""
    from .plots import conservation_png

    gate = result.tolerance.gate
    rows = ordered_rows(result.layer_rows(), gate)
    fields = _fields(rows)
    title = safe(f"{model_name(result)} [{run_label(result)}]")
    return {
        "model": safe(result.model_path),
        "label": safe(run_label(result)),
        "verdict": result.verdict,
        "summary": _summary(result),
        "fidelity": _fidelity(result),
        "hints": [safe(row["hint"]) for row in rows if row["verdict"] != "pass" and row["hint"]][:10],
        "plot": _b64(conservation_png(conservation(result), title)) if result.layers else None,
        "headers": ("layer", "op", "rule", "bias", *fields, "tolerance", "largest", "verdict"),
        "rows": [{"cells": _cells(row, fields), "failing": row["verdict"] != "pass"} for row in rows],
        "maps": _maps(result),
        "tokens": _tokens(result),
        "notes": [safe(note) for note in result.notes],
    }


def build_html(results, source: str | None = None) -> str:
    """The page for a list of AuditResults (overlays on the inputs where the audit kept them)."""
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 comes with torch
        from ..errors import InputError

        raise InputError("the HTML report needs jinja2: pip install 'lrpaudit[plots]'") from None
    results = list(results)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lrpaudit.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    runs = [run_context(result) for result in results]
    failed = any(result.verdict != "pass" for result in results)
    layers = sum(len(run["rows"]) for run in runs)
    failing = sum(row["failing"] for run in runs for row in run["rows"])
    headline = f"{len(results)} run(s), {failing} of {layers} layer checks fail"
    page = env.get_template("report.html.j2").render(
        verdict="fail" if failed else "pass", headline=headline, version=__version__, source=source, runs=runs
    )
    return page


def write_html(results, path, source: str | None = None) -> Path:
    """Build the page, then write it all or nothing."""
    return atomic_write_text(Path(path), build_html(results, source))
