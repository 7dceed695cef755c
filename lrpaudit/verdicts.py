"""Tolerances, verdicts, rows and the one ranking of rows: what every report says, decided in one place.

Gates (DESIGN section 6):
- ``strict``: a node passes if ``rel_error <= layer_rtol``; a sample passes end to end if its ``rel_error <=
  end_to_end_rtol``.
- ``explained``: only the unexplained part is held to the tolerances (``rel_residual`` per node; per sample the
  end-to-end leak minus every accounted share).
In both gates a ``rel_residual`` above the dtype's rounding bound fails as *unexplained*, and a non-finite number
fails as *non_finite*.

Rounding bound. Each node's residual is ``sum_j g_j Z_j - sum_i R_i`` with ``g = R / D``: two sums of the same
products in different orders. Their difference is bounded by about ``n u sum_ij |Z_ij g_j|`` (``u`` the unit
roundoff, ``n`` the terms per sum), and ``sum |Z g| / sum |R|`` is the cancellation ratio, up to ``|Z| / |D|``,
which the stabilizer caps at about ``|Z| / eps``. With ``u = 1.1e-16`` (float64) and ``6e-8`` (float32), fan-ins up
to ~1e4 and a cancellation ratio up to ~1e3, the bounds are ``1e-9`` (float64) and ``1e-4`` (float32). Observed
residuals on the test nets are ~1e-16 and ~1e-7.

Cancellation. ``cancellation = sum_j |R_j| / |sum_j R_j|`` of the relevance a node received (``scale /
|r_received|``): 1 when all of it has one sign, large where positive and negative relevance cancel. Rules with
signed contributions (epsilon on ``a_i w_ij``) let it grow layer by layer; leaks are relative to ``sum |R|``, so
per-layer shares within ``layer_rtol`` can add up to an end-to-end error far beyond it (``sample_hint`` says so).

Ranking. The worst row is the one with the most severe verdict (pass < fail < unexplained < non_finite), then the
largest gated figure (NaN, inf and missing count as largest), then the earliest in graph order. The terminal
table, the verdict line, JSON, JUnit, Markdown, GitHub annotations and batch all use :func:`rank_key`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields

UNEXPLAINED_BOUND = {"float64": 1e-9, "float32": 1e-4}
ROW_FIELDS = (
    "r_received",
    "r_passed",
    "leak",
    "absorbed_bias",
    "absorbed_stabilizer",
    "absorbed_softmax",
    "degenerate",
    "residual",
    "rel_error",
    "rel_residual",
    "scale",
)
# The shares a leak is split into (the residual is what none of them explains).
CATEGORIES = ("absorbed_bias", "absorbed_stabilizer", "absorbed_softmax", "degenerate", "residual")
EXPLAINED_CATEGORIES = tuple(key for key in CATEGORIES if key != "residual")
CATEGORY_WORDS = {
    "absorbed_bias": "bias",
    "absorbed_stabilizer": "stabilizer",
    "absorbed_softmax": "softmax (Taylor bias)",
    "degenerate": "degenerate units",
    "residual": "unexplained residual",
}
# Verdicts from the least to the most severe; a regression is a move up this scale.
VERDICTS = ("pass", "fail", "unexplained", "non_finite")
SEVERITY = {verdict: rank for rank, verdict in enumerate(VERDICTS)}


def severity(verdict: str | None) -> int:
    """How bad a verdict is (an unknown word counts as a plain fail)."""
    return SEVERITY.get(verdict or "pass", 1)


def combine(verdicts: Iterable[str]) -> str:
    """The most severe of several verdicts (``pass`` for none)."""
    return max(verdicts, key=severity, default="pass")


def gated_metric(gate: str) -> str:
    """The row figure the gate holds to the tolerance: ``rel_residual`` (explained) or ``rel_error`` (strict)."""
    return "rel_residual" if gate == "explained" else "rel_error"


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_value(value) -> float:
    """A figure for ranking: NaN, inf and missing (``None``) rank as the worst."""
    return float(value) if finite(value) else math.inf


def relative(value: float, scale: float) -> float:
    """``|value| / scale``; where the scale is 0 (nothing to divide by) the absolute figure ``|value|`` itself."""
    return abs(value) / scale if scale > 0 else abs(value)


def rank_key(row: Mapping, gate: str) -> tuple[int, float]:
    """Sort key of a row, worst first: severity, then the gated figure (see the module docstring)."""
    return severity_then_figure(row["verdict"], row[gated_metric(gate)])


def severity_then_figure(verdict: str, figure) -> tuple[int, float]:
    """The ranking of anything with a verdict and a figure (rows, samples), worst first."""
    return (-severity(verdict), -metric_value(figure))


def ordered_rows(rows: Iterable[Mapping], gate: str) -> list:
    """Failing rows first, worst first (ties in graph order), then the passing rows in graph order."""
    rows = list(rows)
    failing = sorted((row for row in rows if row["verdict"] != "pass"), key=lambda row: rank_key(row, gate))
    return failing + [row for row in rows if row["verdict"] == "pass"]


def worst_row(rows: Iterable[Mapping], gate: str):
    """The worst row (None for no rows): failing before passing, then by the gated figure."""
    return min(rows, key=lambda row: rank_key(row, gate), default=None)


@dataclass(frozen=True)
class Tolerance:
    """The conservation gate; ``node_rtol(node_id)`` gives per-node overrides of ``layer_rtol``."""

    gate: str = "strict"
    layer_rtol: float = 1e-4
    end_to_end_rtol: float = 1e-3
    node_rtol: Callable[[str], float | None] | None = None

    def for_node(self, node_id: str) -> float:
        if self.node_rtol is not None:
            override = self.node_rtol(node_id)
            if override is not None:
                return override
        return self.layer_rtol


@dataclass(frozen=True)
class Row(Mapping):
    """One layer row: a node's figures for one sample, or aggregated over samples (the worst sample's figures).

    Immutable, and read like a dict (``row["rel_error"]``) by the reports. ``worst_sample`` (a position in the
    run's samples) and ``failing_samples`` are set on aggregated rows only.
    """

    id: str
    node_name: str | None
    op: str
    rule: str
    rule_source: str
    bias_mode: str
    r_received: float
    r_passed: float
    leak: float
    absorbed_bias: float
    absorbed_stabilizer: float
    absorbed_softmax: float
    degenerate: float
    residual: float
    rel_error: float
    rel_residual: float
    scale: float
    tolerance: float
    verdict: str
    passing_tolerance: float | None
    largest_category: str | None
    hint: str
    cancellation: float | None = None
    worst_sample: int | None = None
    failing_samples: int | None = None

    def __getitem__(self, key: str):
        if key not in _ROW_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_ROW_KEYS)

    def __len__(self) -> int:
        return len(_ROW_KEYS)

    @property
    def aggregated(self) -> bool:
        return self.worst_sample is not None


_ROW_KEYS = tuple(f.name for f in fields(Row))


def row_verdict(figures: Mapping[str, float], tolerance: float, gate: str, bound: float) -> str:
    """One row's verdict from its figures: non_finite, unexplained (residual above rounding), fail or pass."""
    if not all(math.isfinite(figures[key]) for key in ROW_FIELDS):
        return "non_finite"
    if figures["rel_residual"] > bound:
        return "unexplained"
    return "fail" if figures[gated_metric(gate)] > tolerance else "pass"


def make_row(
    meta: Mapping[str, str], figures: Mapping[str, float], tolerance: float, gate: str, verdict: str, **extra
) -> Row:
    """A row from a node's description (id, op, rule, rule_source, bias_mode), its figures and its verdict."""
    metric = figures[gated_metric(gate)]
    is_finite = all(math.isfinite(figures[key]) for key in ROW_FIELDS)
    values = {key: meta[key] for key in ("id", "op", "rule", "rule_source", "bias_mode")}
    values["node_name"] = meta.get("node_name")
    values.update({key: figures[key] for key in ROW_FIELDS})
    values.update(tolerance=tolerance, verdict=verdict, passing_tolerance=metric if is_finite else None)
    values["largest_category"] = largest_category(figures)
    values["hint"] = fix_hint(values) if verdict != "pass" else ""
    values["cancellation"] = cancellation(figures["r_received"], figures["scale"])
    return Row(**values, **extra)


def cancellation(r_received: float, scale: float) -> float | None:
    """``sum_j |R_j| / |sum_j R_j|`` of what a node received (see the module docstring); None where the sum is
    exactly 0 (nothing arrived, or it cancels exactly) or a figure is not finite."""
    if not (math.isfinite(r_received) and math.isfinite(scale)) or r_received == 0:
        return None
    ratio = scale / abs(r_received)
    return ratio if math.isfinite(ratio) else None


def largest_category(figures: Mapping[str, float]) -> str | None:
    """Which accounted share dominates the leak (None when nothing leaked)."""
    shares = {key: abs(figures[key]) for key in CATEGORIES if math.isfinite(figures[key])}
    if not shares or max(shares.values()) == 0.0:
        return None
    return max(shares, key=shares.get)


def category_share(row: Mapping) -> float:
    """The largest category's share of the relevance the node received, in percent (0 when none)."""
    category, scale = row.get("largest_category"), row.get("scale") or 0.0
    return abs(row[category]) / scale * 100 if category and scale else 0.0


def fix_hint(row: Mapping) -> str:
    """A one-line suggestion for a failing row, naming the dominant category."""
    if row["verdict"] == "non_finite":
        return (
            f"NaN/Inf at {row['id']} under {row['rule']}, from non-finite weights or activations in the model "
            "or a zero denominator (use a stabilizer, epsilon > 0)"
        )
    category = row["largest_category"]
    share = category_share(row)
    where = f"at {row['id']} under {row['rule']}"
    tol = row["passing_tolerance"]
    raise_tol = f"or raise the tolerance to {round_up(tol)}" if tol is not None else ""
    if row["verdict"] == "unexplained" or category == "residual":
        return (
            f"unexplained residual {share:.3g}% {where}: a rule, graph or numerics fault; run --verify-rules"
        )
    if category == "absorbed_bias":
        return f"bias absorbs {share:.3g}% {where}: bias: ignore or distribute conserves, {raise_tol}"
    if category == "absorbed_stabilizer":
        return f"stabilizer absorbs {share:.3g}% {where}: lower epsilon/stabilizer, {raise_tol}"
    if category == "absorbed_softmax":
        return (
            f"softmax (Taylor bias) absorbs {share:.3g}% {where}: AttnLRP's softmax rule does not conserve; "
            f"constant_factor on the attention product (cp-lrp) sends no relevance into the softmax, {raise_tol}"
        )
    if category == "degenerate":
        return f"degenerate units take {share:.3g}% {where}: units with nothing to carry (dead or one-signed), {raise_tol}"
    return raise_tol


def round_up(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant digits, rounded up so the printed tolerance really passes."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(value)) - digits + 1
    step = 10.0**exponent
    rounded = math.ceil(value / step - 1e-9) * step
    if rounded < value * (1 - 1e-12):
        rounded += step
    return f"{rounded:.{max(0, -exponent)}f}" if -4 <= exponent < 0 else f"{rounded:.{digits - 1}e}"


# Above this, cancellation is named as the cause of an end-to-end failure whose layers all pass.
CANCELLATION_HINT = 1e3


def sample_hint(
    end_to_end: float,
    end_to_end_rtol: float,
    totals: Mapping[str, float],
    output_scale: float,
    max_cancellation: float | None,
    at: str | None,
) -> str:
    """Why a sample fails end to end while every one of its layer rows passes, and what to do about it."""
    shares = {key: abs(totals.get(key, 0.0)) for key in CATEGORIES if math.isfinite(totals.get(key, 0.0))}
    category = max(shares, key=shares.get) if shares and max(shares.values()) > 0 else None
    total = (
        f"{CATEGORY_WORDS[category]} {shares[category] / output_scale * 100:.3g}% of the output relevance in total"
        if category and output_scale > 0
        else "in total"
    )
    head = f"fails end to end ({end_to_end:.3g} > {end_to_end_rtol:g}) while every layer passes"
    raise_tol = f"or raise end_to_end_rtol to {round_up(end_to_end)}"
    if max_cancellation is not None and max_cancellation >= CANCELLATION_HINT:
        return (
            f"{head}: relevance cancels inside the network (sum|R| / |sum R| reaches {max_cancellation:.3g} at "
            f"{at}), so leaks within layer_rtol of sum|R| add up ({total}); rules whose contributions cannot "
            f"cancel conserve end to end (--preset conservative), {raise_tol}"
        )
    return f"{head}: the layers' leaks, each within layer_rtol, add up ({total}); {raise_tol}"


def sample_verdict(end_to_end: float, layer_verdict: str, end_to_end_rtol: float) -> str:
    """A sample fails if any of its layer rows fails, or its end-to-end figure is beyond the tolerance."""
    if not math.isfinite(end_to_end):
        return "non_finite"
    if layer_verdict != "pass":
        return layer_verdict
    return "fail" if end_to_end > end_to_end_rtol else "pass"
