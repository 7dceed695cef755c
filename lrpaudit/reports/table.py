"""The terminal report (rich): a compact per-layer table that fits 100 columns, a wide one with ``-v``."""

from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..display import rich_text, safe
from ..verdicts import CATEGORY_WORDS, category_share, ordered_rows, severity_then_figure, worst_row
from ._format import fmt

VERDICT_STYLE = {"pass": "green", "fail": "red", "unexplained": "bold magenta", "non_finite": "bold red"}
COMPACT_RULE_WIDTH = 19
SHARE_HEADERS = {
    "absorbed_bias": "bias share",
    "absorbed_stabilizer": "stab share",
    "absorbed_softmax": "smax share",
    "degenerate": "degenerate",
}
SHORT_WORDS = {
    "absorbed_bias": "bias",
    "absorbed_stabilizer": "stab",
    "absorbed_softmax": "smax",
    "degenerate": "degen",
    "residual": "resid",
}


def short_rule(row: dict) -> str:
    """``epsilon(1e-06)``, ``alphabeta(2, 1) ign``: the rule with its values, and a non-default bias mode."""
    text = re.sub(r"\b\w+=", "", row["rule"])
    if row.get("bias_mode") not in (None, "-", "absorb"):
        text += {"ignore": " ign", "distribute": " dist"}.get(row["bias_mode"], f" {row['bias_mode']}")
    return text


def _category(row: dict) -> str:
    category = row.get("largest_category")
    if not category or (
        row["verdict"] == "pass" and abs(row.get("leak", 0.0)) <= 1e-12 * (row.get("scale") or 1)
    ):
        return "-"
    return f"{SHORT_WORDS[category]} {category_share(row):.2g}%"


def _exact_passthrough(row: dict) -> bool:
    """Rows of ops that only pass or route relevance and lost nothing beyond rounding."""
    return (
        row["rule"] in ("pass", "route", "gate", "winner_take_all")
        and row["verdict"] == "pass"
        and (abs(row["leak"]) <= 1e-12 * (row.get("scale") or 1.0))
    )


def has_softmax_share(rows) -> bool:
    """Whether the softmax (Taylor) share needs a column: some row runs the taylor rule or has such a share."""
    return any(row["rule"] == "taylor" or row["absorbed_softmax"] != 0 for row in rows)


def render_layers(result, console: Console, verbose: bool = False) -> None:
    """The per-layer conservation table of one audit (``-v``: every accounting column; the softmax share only
    for graphs that have one)."""
    rows = ordered_rows(result.layer_rows(), result.tolerance.gate)
    shares = ["absorbed_bias", "absorbed_stabilizer", "absorbed_softmax", "degenerate"]
    if not has_softmax_share(rows):
        shares.remove("absorbed_softmax")
    title = rich_text(
        f"{result.model_path}  [{result.config.get('name', 'rules')}]  {result.dtype}, gate {result.tolerance.gate}"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    # No min_width under -v: rich re-measures a collapsed column against its min_width plus padding, which can
    # leave the wide table one character wider than the console and crop the verdict column.
    table.add_column(
        "layer", overflow="fold", min_width=None if verbose else 30, max_width=48 if verbose else 30
    )
    table.add_column("op", width=7 if not verbose else 14, overflow="ellipsis", no_wrap=True)
    table.add_column("rule", overflow="fold", max_width=COMPACT_RULE_WIDTH if not verbose else 36)
    if verbose:
        table.add_column("bias")
        for header in ("r_received", "r_passed", "leak", *(SHARE_HEADERS[key] for key in shares), "residual"):
            table.add_column(header, justify="right")
    table.add_column("rel_error", justify="right")
    if verbose:
        table.add_column("rel_resid", justify="right")
        table.add_column("cancel", justify="right")
        table.add_column("tol", justify="right")
    table.add_column("largest", max_width=14, overflow="ellipsis", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    hidden = 0
    for row in rows:
        if not verbose and _exact_passthrough(row):
            hidden += 1
            continue
        cells = [rich_text(row["id"]), rich_text(row["op"])]
        cells.append(rich_text(short_rule(row) if not verbose else row["rule"]))
        if verbose:
            cells.append(rich_text(row["bias_mode"]))
            cells += [fmt(row[k]) for k in ("r_received", "r_passed", "leak", *shares, "residual")]
        cells.append(fmt(row["rel_error"]))
        if verbose:
            cells += [fmt(row["rel_residual"]), fmt(row["cancellation"], missing="-"), fmt(row["tolerance"])]
        cells.append(_category(row))
        cells.append(Text(row["verdict"].upper(), style=VERDICT_STYLE[row["verdict"]]))
        table.add_row(*cells, style="red" if row["verdict"] != "pass" else None)
    console.print(table)
    if hidden:
        console.print(f"  ({hidden} pass/route layers conserve exactly; -v shows them)", highlight=False)
    hints = [r for r in rows if r["verdict"] != "pass" and r.get("hint")]
    for row in hints[:10]:
        console.print(rich_text(f"  hint: {row['hint']}"))
    if len(hints) > 10:
        console.print(f"  ... and {len(hints) - 10} more failing layers (see -v or the JSON report)")
    render_sample_hint(result, console)


def render_sample_hint(result, console: Console) -> None:
    """One hint for the samples that fail end to end while all their layers pass: the worst one's."""
    gate = result.tolerance.gate
    hinted = [s for s in result.samples if s.hint]
    if not hinted:
        return
    worst = min(hinted, key=lambda s: severity_then_figure(s.verdict, s.end_to_end(gate)))
    more = f" ({len(hinted) - 1} more samples like it)" if len(hinted) > 1 else ""
    console.print(rich_text(f"  hint: sample {worst.index} {worst.hint}{more}"))


def render_samples(result, console: Console) -> None:
    """End-to-end figures per sample (worst first, at most 10)."""
    gate = result.tolerance.gate
    samples = sorted(result.samples, key=lambda s: severity_then_figure(s.verdict, s.end_to_end(gate)))[:10]
    table = Table(title="end to end (worst samples)", title_justify="left", pad_edge=False, show_edge=False)
    totals = {"absorbed_bias": "bias", "absorbed_stabilizer": "stabilizer", "absorbed_softmax": "softmax"}
    totals["degenerate"] = "degenerate"
    if not has_softmax_share(result.layer_rows()):
        del totals["absorbed_softmax"]
    headers = (
        "sample",
        "target",
        "r_output",
        "r_input",
        "rel_error",
        *totals.values(),
        "max cancel",
        "verdict",
    )
    for header in headers:
        table.add_column(header, justify="right" if header not in ("sample", "verdict") else "left")
    for s in samples:
        table.add_row(
            rich_text(s.source),
            str(s.target),
            fmt(s.r_output),
            fmt(s.r_input),
            fmt(s.rel_error),
            *(fmt(s.totals[key]) for key in totals),
            fmt(s.max_cancellation, missing="-"),
            Text(s.verdict.upper(), style=VERDICT_STYLE[s.verdict]),
        )
    console.print(table)


def render_checks(result, console: Console) -> None:
    """--verify-rules: the dense re-evaluation of each linear-type node's rule."""
    if not result.rule_checks:
        return
    table = Table(
        title="rule self-verification (dense formula vs engine)", title_justify="left", show_edge=False
    )
    for header in ("layer", "rule", "units checked", "max abs dev", "rel dev"):
        table.add_column(header)
    for check in result.rule_checks:
        table.add_row(
            rich_text(check.node_id),
            rich_text(check.rule),
            f"{check.units_checked}/{check.units_total}",
            fmt(check.max_abs_dev),
            fmt(check.rel_dev),
        )
    console.print(table)


def summary_line(result) -> str:
    """The one-line verdict for stderr."""
    rows = result.layer_rows()
    failed = [r for r in rows if r["verdict"] != "pass"]
    failed_samples = sum(s.verdict != "pass" for s in result.samples)
    name = result.config.get("name", "rules")
    head = f"lrpaudit: {result.model_path} [{name}]: {result.verdict.upper()}"
    body = f"{len(rows) - len(failed)}/{len(rows)} layers pass, {len(result.samples) - failed_samples}/{len(result.samples)} samples pass"
    if failed:
        worst = worst_row(failed, result.tolerance.gate)
        category = CATEGORY_WORDS.get(worst.get("largest_category") or "", "-")
        body += f"; worst {worst['id']} rel_error {fmt(worst['rel_error'])} ({category})"
    return safe(f"{head}: {body}")


def render_notes(result, console: Console) -> None:
    """The audit's notes (they quote node ids and file paths: shown as written)."""
    for note in result.notes:
        console.print(rich_text(f"note: {note}"))
