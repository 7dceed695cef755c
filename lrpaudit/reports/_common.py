"""Helpers shared by the report writers: verdict ordering, run labels, number formatting, atomic file writes."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError

# How bad a verdict is; a regression is a move up this scale.
SEVERITY = {"pass": 0, "fail": 1, "unexplained": 2, "non_finite": 3}
LINEAR_OPS = ("linear", "conv", "conv_transpose", "affine")


def severity(verdict: str | None) -> int:
    return SEVERITY.get(verdict or "pass", 1)


def gated_metric(gate: str) -> str:
    """The row figure the gate holds to the tolerance: ``rel_residual`` (explained) or ``rel_error`` (strict)."""
    return "rel_residual" if gate == "explained" else "rel_error"


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_value(value) -> float:
    """A figure for ranking: NaN, inf and missing (``None``) rank as the worst."""
    return float(value) if finite(value) else math.inf


def fmt(value, digits: int = 3) -> str:
    """Short number for humans: ``0``, ``0.0601``, ``1.2e-05``, ``nan``, ``inf``, ``-`` for missing."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def run_label(result) -> str:
    """What the run was configured with: the config's name, its file name, or the rules it applied."""
    config = result.config or {}
    if config.get("name"):
        return str(config["name"])
    if config.get("path"):
        return Path(str(config["path"])).name
    seen: list[str] = []
    for layer in result.layers:
        if layer.op not in LINEAR_OPS:
            continue
        mode = layer.bias_mode
        text = layer.rule if mode in ("absorb", "-", "", None) else f"{layer.rule} bias={mode}"
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) if seen else "no linear layers"


def model_name(result) -> str:
    return Path(result.model_path).name


@dataclass
class Failure:
    """One failing check of one run, for ranking across runs (layer rows and end-to-end samples)."""

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
    """Every failing aggregated layer row, worst first (verdict severity, then the gated figure).

    End-to-end sample failures are listed only for runs where no layer row failed (a failing layer already fails
    every sample that saw it, and would flood the list); they follow the layer rows.
    """
    layers: list[Failure] = []
    samples: list[Failure] = []
    for run, result in enumerate(results):
        gate = result.tolerance.gate
        metric = gated_metric(gate)
        failing = [row for row in result.layer_rows() if row["verdict"] != "pass"]
        layers.extend(Failure(run, result, "layer", row, metric) for row in failing)
        if failing:
            continue
        for sample in result.samples:
            if sample.verdict == "pass":
                continue
            value = sample.rel_unexplained if gate == "explained" else sample.rel_error
            row = {
                "id": f"sample {sample.index}",
                "source": sample.source,
                "verdict": sample.verdict,
                "value": value,
                "rel_error": sample.rel_error,
                "tolerance": result.tolerance.end_to_end_rtol,
                "target": sample.target,
            }
            samples.append(Failure(run, result, "sample", row, "value"))

    def key(failure: Failure):
        return (-severity(failure.verdict), -metric_value(failure.value), failure.run)

    return sorted(layers, key=key) + sorted(samples, key=key)


def check_writable(path, folders_made: bool = False) -> None:
    """Fail before a long audit when ``path`` cannot be written: a folder in its place, or a missing or read-only
    folder (``folders_made``: the writer creates missing folders itself)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    folder = path.parent
    while folders_made and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write {path}: folder {folder} is not writable")


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` all or nothing: a temp file in the same folder, fsync, ``os.replace``.

    A failure at any point removes the temp file and leaves an existing ``path`` untouched. Folders are not
    created: a missing folder is the user's typo, reported as :class:`OutputError` (exit 2).
    """
    path = Path(path)
    folder = path.parent
    data = text.encode("utf-8")
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
