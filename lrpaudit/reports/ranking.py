"""Failures ranked across runs, worst first, for the reports that list them (annotations, JUnit, Markdown).

The order is :func:`lrpaudit.verdicts.rank_key` (severity, then the gated figure); ties keep the run order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..verdicts import gated_metric, severity_then_figure


@dataclass(frozen=True)
class Failure:
    """One failing check of one run: an aggregated layer row, or a sample that fails only end to end."""

    run: int
    result: object
    kind: str  # "layer" | "sample"
    row: dict  # an aggregated layer row, or a sample's figures (see ranked_failures)
    metric: str

    @property
    def verdict(self) -> str:
        return self.row["verdict"]

    @property
    def value(self) -> float:
        return self.row[self.metric]


def ranked_failures(results) -> list[Failure]:
    """Every failing aggregated layer row, worst first; then samples that fail end to end, worst first.

    End-to-end sample failures are listed only for runs where no layer row failed (a failing layer already fails
    every sample that saw it, and would flood the list).
    """
    layers: list[Failure] = []
    samples: list[Failure] = []
    for run, result in enumerate(results):
        gate = result.tolerance.gate
        failing = [row for row in result.layer_rows() if row["verdict"] != "pass"]
        layers.extend(Failure(run, result, "layer", row, gated_metric(gate)) for row in failing)
        if failing:
            continue
        for sample in result.samples:
            if sample.verdict == "pass":
                continue
            row = {
                "id": f"sample {sample.index}",
                "source": sample.source,
                "verdict": sample.verdict,
                "value": sample.end_to_end(gate),
                "rel_error": sample.rel_error,
                "tolerance": result.tolerance.end_to_end_rtol,
                "target": sample.target,
            }
            samples.append(Failure(run, result, "sample", row, "value"))

    def key(failure: Failure):
        return (*severity_then_figure(failure.verdict, failure.value), failure.run)

    return sorted(layers, key=key) + sorted(samples, key=key)
