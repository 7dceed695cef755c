"""What ``lrpaudit batch`` shows: the run x verdict x worst-layer table, one stderr line per run, the verdict line."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from ..display import rich_text, safe
from ..verdicts import CATEGORY_WORDS, rank_key, worst_row
from ._format import fmt
from .table import VERDICT_STYLE


def run_worst(result):
    """The run's worst aggregated layer row (None for a run with no layers)."""
    return worst_row(result.layer_rows(), result.tolerance.gate)


def run_line(run, outcome, total: int) -> str:
    """``lrpaudit: [3/9] digits_cnn.onnx x conservative: PASS (0.1 s)``."""
    head = f"lrpaudit: [{run.index + 1}/{total}] {run.label}"
    took = f"({outcome.seconds:.1f} s)"
    if outcome.error is not None:
        return safe(f"{head}: ERROR {took}: {outcome.error}")
    result = outcome.result
    if result.verdict == "pass":
        return safe(f"{head}: PASS {took}")
    rows = result.layer_rows()
    failing = sum(row["verdict"] != "pass" for row in rows)
    worst = run_worst(result)
    text = f"{head}: FAIL {took}: {failing}/{len(rows)} layers fail"
    if worst is not None and worst["verdict"] != "pass":
        category = CATEGORY_WORDS.get(worst.get("largest_category") or "", "-")
        return safe(f"{text}; worst {worst['id']} rel_error {fmt(worst['rel_error'])} ({category})")
    failed_samples = sum(s.verdict != "pass" for s in result.samples)
    return safe(f"{text}; {failed_samples}/{len(result.samples)} samples fail end to end")


def render_summary(manifest, results: list, console) -> None:
    """The run x verdict x worst layer table on stdout."""
    shape = (
        f"{len(manifest.runs)} listed runs"
        if manifest.explicit
        else f"{len(manifest.models)} models x {len(manifest.configs)} configs"
    )
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),  # two spaces between columns: the ids keep their 30 characters in 100 columns
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("model", overflow="fold", max_width=24)
    table.add_column("config", overflow="fold", max_width=20)
    table.add_column("layers", justify="right", no_wrap=True)
    table.add_column("worst layer", overflow="fold", max_width=30)
    table.add_column("rel_error", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for run, result in zip(manifest.runs, results):
        rows = result.layer_rows()
        passing = sum(row["verdict"] == "pass" for row in rows)
        worst = run_worst(result)
        verdict = result.verdict
        table.add_row(
            str(run.index + 1),
            rich_text(run.model.id),
            rich_text(run.config.id),
            f"{passing}/{len(rows)}",
            rich_text(worst["id"]) if worst else "-",
            fmt(worst["rel_error"]) if worst else "-",
            Text(verdict.upper(), style=VERDICT_STYLE[verdict]),
            style="red" if verdict != "pass" else None,
        )
    # the heading is one line, never wrapped
    console.print(rich_text(f"{manifest.path}  [{shape}]"), soft_wrap=True)
    console.print(table)


def final_line(manifest, results: list, seconds: float) -> str:
    """The batch's verdict line, naming the worst failing run and row."""
    passed = sum(result.verdict == "pass" for result in results)
    verdict = "PASS" if passed == len(results) else "FAIL"
    text = f"lrpaudit: {manifest.path}: {verdict}: {passed}/{len(results)} runs pass"
    if passed < len(results):
        ranked = [(run_worst(result), k) for k, result in enumerate(results)]
        ranked = [(row, k) for row, k in ranked if row is not None and row["verdict"] != "pass"]
        if ranked:
            row, k = min(
                ranked, key=lambda item: (*rank_key(item[0], results[item[1]].tolerance.gate), item[1])
            )
            text += f"; worst {manifest.runs[k].label}: {row['id']} rel_error {fmt(row['rel_error'])}"
    return safe(f"{text} (in {seconds:.1f} s)")
