"""The Markdown summary (``--markdown``, and the GitHub job summary): GitHub-flavoured Markdown.

Layout: a verdict header (``## lrpaudit: FAIL — 3 of 12 layer checks failed``), one line per run (model, config,
samples, dtype, gate, verdict, forward fidelity), a table of the worst rows over all runs (failing first, at most
``worst`` rows), then per run a collapsible ``<details>`` with the full per-layer table (capped at ``max_rows``
rows so the job summary stays far below GitHub's 1 MiB per step) and the run's notes.
"""

from __future__ import annotations

from pathlib import Path

from .. import display
from ..verdicts import (
    CATEGORY_WORDS,
    category_share,
    gated_metric,
    metric_value,
    rank_key,
    severity_then_figure,
)
from ._format import fidelity_line, fmt, model_name, run_label
from ._io import atomic_write_text

ICON = {"pass": "✅", "fail": "❌", "unexplained": "⚠️", "non_finite": "💥"}
WORST_ROWS = 15
MAX_DETAIL_ROWS = 400


def _cell(value) -> str:
    """Text in a table cell or a list item: one safe line, Markdown and HTML syntax escaped (names come from
    files: a node id cannot add a link, HTML, an emoji or a table column)."""
    return display.markdown(value)


def _code(value) -> str:
    """A code span (node ids, paths): one safe line; backticks cannot close it, pipes cannot split the row."""
    return display.markdown_code(value)


def _share(row: dict) -> str:
    category = row.get("largest_category")
    if not category:
        return "-"
    return f"{CATEGORY_WORDS[category]} {fmt(category_share(row), 2)}%"


def _verdict(verdict: str) -> str:
    return f"{ICON.get(verdict, '')} {verdict}".strip()


def _header(results) -> str:
    rows = [row for result in results for row in result.layer_rows()]
    failed_rows = sum(row["verdict"] != "pass" for row in rows)
    samples = [sample for result in results for sample in result.samples]
    failed_samples = sum(sample.verdict != "pass" for sample in samples)
    failed = any(result.verdict != "pass" for result in results)
    word = "FAIL" if failed else "PASS"
    if failed_rows:
        text = f"{failed_rows} of {len(rows)} layer checks failed"
    else:
        text = f"all {len(rows)} layer checks passed"
    if failed_samples or failed:
        text += f", {failed_samples} of {len(samples)} samples failed end to end"
    else:
        text += f" on {len(samples)} samples"
    runs = f" ({len(results)} runs)" if len(results) != 1 else ""
    return f"## lrpaudit: {word} — {text}{runs}"


def _fidelity(result) -> str:
    return fidelity_line(result.fidelity, "**FAILED**", result.fidelity_compared, len(result.samples))


def _run_line(result) -> str:
    failing = sum(row["verdict"] != "pass" for row in result.layer_rows())
    tol = result.tolerance
    return (
        f"- {_verdict(result.verdict)} {_code(result.model_path)} [{_cell(run_label(result))}]: "
        f"{failing} of {len(result.layers)} layers fail, {len(result.samples)} samples, {result.dtype}, "
        f"{tol.gate} gate (layer_rtol {fmt(tol.layer_rtol)}, end_to_end_rtol {fmt(tol.end_to_end_rtol)}); "
        f"{_fidelity(result)}"
    )


def _worst_table(results, limit: int) -> list[str]:
    entries = []
    for run, result in enumerate(results):
        metric = gated_metric(result.tolerance.gate)
        for order, row in enumerate(result.layer_rows()):
            entries.append((run, order, result, row, metric))
    entries.sort(key=lambda e: (*rank_key(e[3], e[2].tolerance.gate), e[0], e[1]))
    if any(e[3]["verdict"] != "pass" for e in entries):
        entries = [e for e in entries if e[3]["verdict"] != "pass"]
    else:  # all pass: the largest figures, zeros left out
        entries = [e for e in entries if metric_value(e[3][e[4]]) > 0][:5]
    shown = entries[:limit]
    multi = len(results) > 1
    head = ["verdict", *(["run"] if multi else []), "layer", "op", "rule", "bias", "figure", "tolerance"]
    head += ["largest share", "hint"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _run, _order, result, row, metric in shown:
        cells = [_verdict(row["verdict"])]
        if multi:
            cells.append(f"{_code(model_name(result))} [{_cell(run_label(result))}]")
        cells += [_code(row["id"]), _cell(row["op"]), _cell(row["rule"]), _cell(row["bias_mode"])]
        cells += [
            f"{metric} {fmt(row[metric])}",
            fmt(row["tolerance"]),
            _share(row),
            _cell(row.get("hint") or ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(entries) > limit:
        lines.append(
            f"\n_{len(entries) - limit} more failing rows in the per-run tables below and in the JSON report._"
        )
    return lines


def _details(result, max_rows: int) -> list[str]:
    rows = result.layer_rows()
    failing = sum(row["verdict"] != "pass" for row in rows)
    # inside raw HTML (<summary>), Markdown escapes do not apply: HTML entities do
    summary = (
        f"{_verdict(result.verdict)} {display.html(model_name(result))} [{display.html(run_label(result))}]: "
        f"all {len(rows)} layers ({failing} failing)"
    )
    head = ["#", "verdict", "layer", "op", "rule", "bias", "rule source", "rel_error", "rel_residual"]
    head += [
        "bias share",
        "stabilizer",
        "softmax",
        "degenerate",
        "residual",
        "tolerance",
        "passing tol",
        "failing samples",
    ]
    lines = [
        "<details>",
        f"<summary>{summary}</summary>",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for index, row in enumerate(rows[:max_rows]):
        scale = row.get("scale") or 0.0

        def share(key, row=row, scale=scale):
            return (
                f"{fmt(abs(row[key]) / scale * 100, 2)}%" if scale and row[key] == row[key] else fmt(row[key])
            )

        cells = [
            str(index),
            _verdict(row["verdict"]),
            _code(row["id"]),
            _cell(row["op"]),
            _cell(row["rule"]),
            _cell(row["bias_mode"]),
            _code(row["rule_source"]),
            fmt(row["rel_error"]),
            fmt(row["rel_residual"]),
            share("absorbed_bias"),
            share("absorbed_stabilizer"),
            share("absorbed_softmax"),
            share("degenerate"),
            fmt(row["residual"]),
            fmt(row["tolerance"]),
            fmt(row.get("passing_tolerance")),
            str(row.get("failing_samples", 0)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > max_rows:
        lines.append(f"\n_{len(rows) - max_rows} more layers in the JSON report._")
    lines.append("")
    lines.append(f"Samples: {_samples_line(result)}")
    lines += ["", "</details>"]
    return lines


def _samples_line(result) -> str:
    samples = result.samples
    failing = [s for s in samples if s.verdict != "pass"]
    gate = result.tolerance.gate
    worst = min(samples, key=lambda s: severity_then_figure(s.verdict, s.end_to_end(gate)), default=None)
    text = f"{len(failing)} of {len(samples)} fail end to end"
    if worst is not None:
        text += (
            f"; worst end-to-end rel_error {fmt(worst.rel_error)} (sample {worst.index}, {_cell(worst.source)}, "
            f"tolerance {fmt(result.tolerance.end_to_end_rtol)})"
        )
    return text


def _conservation_section(results, plots) -> list[str]:
    """Per run, the conservation plot: an image file next to the Markdown (``plots[k]``), or a Mermaid chart that
    GitHub draws in a job summary (``plots`` is ``"mermaid"``)."""
    from .conservation import conservation

    lines = ["### Conservation (relevance in flight from output to input, leak per node)", ""]
    for k, result in enumerate(results):
        title = f"{model_name(result)} [{run_label(result)}]"
        if plots == "mermaid":
            lines += mermaid_chart(conservation(result), title)
        elif plots[k]:
            lines.append(f"![conservation plot of {_cell(title)}]({plots[k]})")
        lines.append("")
    return lines


MAX_CHART_POINTS = 400


def mermaid_chart(figures, title: str) -> list[str]:
    """A Mermaid ``xychart-beta`` of the mean relevance in flight after each node (each step is that node's leak).

    Bars are left out on purpose: Mermaid draws them from the bottom of the axis, which misreads a negative
    leak. The chart grammar has no exponents, so every number is a plain decimal.
    """
    step = max(1, -(-len(figures.labels) // MAX_CHART_POINTS))
    remaining = figures.mean_remaining[1:][::step]
    safe = "".join(ch for ch in title if ch.isprintable() and ch not in '"`\\[]{}')[:80]
    numbers = [float(v) for v in (*remaining, 0.0, 1.0) if v == v and abs(v) != float("inf")]
    low, high = min(numbers), max(numbers)
    pad = (high - low) * 0.05 or 0.05
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{safe}"',
        f'    x-axis "node, output to input" 1 --> {max(len(remaining), 2)}',
        f'    y-axis "fraction of the score" {_decimal(low - pad)} --> {_decimal(high + pad)}',
        "    line [" + ", ".join(_decimal(v) for v in remaining) + "]",
        "```",
    ]


def _decimal(value: float) -> str:
    """A plain decimal (Mermaid's chart grammar has no exponents): ``0.000123``, ``-0.5``, ``1``; NaN as 0."""
    if value != value or abs(value) == float("inf"):
        return "0"
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def build_markdown(results, worst: int = WORST_ROWS, max_rows: int = MAX_DETAIL_ROWS, plots=None) -> str:
    """The summary for a list of AuditResults; ``plots``: image paths per run, ``"mermaid"``, or None."""
    results = list(results)
    lines = [_header(results), ""]
    lines += [_run_line(result) for result in results]
    lines.append("")
    table = _worst_table(results, worst)
    if len(table) > 2:
        failing = any(row["verdict"] != "pass" for result in results for row in result.layer_rows())
        lines.append("### Failing layers, worst first" if failing else "### Largest conservation errors")
        lines.append("")
        lines += table
        lines.append("")
    if plots is not None and any(result.layers for result in results):
        lines += _conservation_section(results, plots)
    for result in results:
        lines += _details(result, max_rows)
        lines.append("")
    notes = []
    for result in results:
        for note in result.notes:
            if (result.model_path, note) not in [(r.model_path, n) for r, n in notes]:
                notes.append((result, note))
    if notes:
        lines.append("### Notes")
        lines.append("")
        multi = len(results) > 1
        for result, note in notes:
            prefix = f"{_code(model_name(result))}: " if multi else ""
            lines.append(f"- {prefix}{_cell(note)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(results, path) -> str:
    """Write the summary atomically; returns the text (for the GitHub job summary)."""
    text = build_markdown(results)
    atomic_write_text(Path(path), text)
    return text
