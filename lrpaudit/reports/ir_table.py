"""Rich rendering of the IR table and the fidelity result (``lrpaudit inspect``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..display import rich_text
from ..ir import Graph, table_rows


def render_ir(graph: Graph, console: Console | None = None, assignment=None) -> None:
    """The IR table; with a config ``assignment``, each node's rule and the config line that chose it."""
    console = console or Console(width=160 if assignment is None else 200)
    title = f"IR of {graph.source.get('path', '?')} (opset {graph.source.get('opset', '-')})"
    table = Table(title=rich_text(title), show_edge=True)
    headers = ["id", "op", "inputs", "outputs", "params", "origin"]
    if assignment is not None:
        headers += ["rule", "chosen by"]
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in table_rows(graph):
        cells = [row[h] for h in headers[:6]]
        if assignment is not None:
            rule = assignment.rules.get(row["id"])
            rule_text = (
                rule.describe() + ("" if rule.bias == "absorb" else f" bias={rule.bias}") if rule else "-"
            )
            cells += [rule_text, assignment.sources.get(row["id"], "-")]
        # op names (aten::linear) are shown as written: the table's border starts every line
        table.add_row(*(rich_text(cell, framed=header == "origin") for header, cell in zip(headers, cells)))
    console.print(table)
    for note in graph.notes:
        console.print(rich_text(f"note: {note}"))


def render_fidelity(result, console: Console | None = None) -> None:
    """The fidelity line: max abs/rel difference to the runtime and how many tensors were compared."""
    console = console or Console(width=160)
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"fidelity vs {result.reference} ({result.dtype}): max abs diff {result.max_abs_diff:.3g}, "
        f"max rel diff {result.max_rel_diff:.3g} (tolerance {result.tolerance:g}), "
        f"{len(result.tensors)} tensors compared: {verdict}"
    )
