"""Rich rendering of the IR table and the fidelity result (``lrpaudit inspect``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..fidelity import FidelityResult
from ..ir import Graph, table_rows


def render_ir(graph: Graph, console: Console | None = None) -> None:
    console = console or Console(width=160)
    table = Table(title=f"IR of {graph.source.get('path', '?')} (opset {graph.source.get('opset', '-')})")
    for header in ("id", "op", "inputs", "outputs", "params", "origin"):
        table.add_column(header, overflow="fold")
    for row in table_rows(graph):
        table.add_row(*(row[h] for h in ("id", "op", "inputs", "outputs", "params", "origin")))
    console.print(table)
    for note in graph.notes:
        console.print(f"note: {note}")


def render_fidelity(result: FidelityResult, console: Console | None = None) -> None:
    console = console or Console(width=160)
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"fidelity vs {result.reference} ({result.dtype}): max abs diff {result.max_abs_diff:.3g}, "
        f"max rel diff {result.max_rel_diff:.3g} (tolerance {result.tolerance:g}), "
        f"{len(result.tensors)} tensors compared: {verdict}"
    )
