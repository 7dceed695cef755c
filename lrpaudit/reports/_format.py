"""How reports write numbers and name runs: one short number format, one run label."""

from __future__ import annotations

import math
from pathlib import Path

from ..ir import LINEAR_TYPE


def fmt(value, digits: int = 3, missing: str = "-") -> str:
    """Short number for humans: ``0``, ``0.0601``, ``1.2e-05``, ``nan``, ``inf``, ``-inf``; ``missing`` for None."""
    if value is None:
        return missing
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
        if layer.op not in LINEAR_TYPE:
            continue
        mode = layer.bias_mode
        text = layer.rule if mode in ("absorb", "-", "", None) else f"{layer.rule} bias={mode}"
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) if seen else "no linear layers"


def model_name(result) -> str:
    return Path(result.model_path).name


def fidelity_line(fidelity, failed: str = "FAILED", compared=None, samples: int | None = None) -> str:
    """The forward-fidelity sentence every report shows (``failed``: how a mismatch is marked; ``compared``, a
    ``fidelity.FidelityCoverage``, and the run's sample count say on how many samples it was checked)."""
    if fidelity is None:
        return "forward fidelity not checked"
    state = "ok" if fidelity.passed else failed
    on = (
        f" on {compared.samples} of {samples} samples" if compared is not None and samples is not None else ""
    )
    return (
        f"forward fidelity vs {fidelity.reference} ({fidelity.dtype}){on}: max abs diff "
        f"{fmt(fidelity.max_abs_diff)}, max rel diff {fmt(fidelity.max_rel_diff)} (tolerance "
        f"{fmt(fidelity.tolerance)}): {state}"
    )
