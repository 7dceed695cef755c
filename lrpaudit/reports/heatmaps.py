"""Relevance maps as pictures, in the LRP convention: signed, centred on zero, scaled symmetrically.

An input's relevance is shown per sample as a 2-D map (an image input ``(N, C, H, W)``: relevance summed over the
channels) or per token (a sequence input ``(N, T, D)``: summed over the embedding dimension ``D``). The colour
scale is symmetric around 0 and set by a high percentile of ``|R|`` (``PERCENTILE``, 99.5), so that 0 is white,
positive relevance red and negative blue, and a few extreme pixels do not wash the map out. Min-max scaling (the
default of most plotting code) moves the zero and hides the sign; we never use it.

This module is numpy only; :mod:`.plots` turns the maps into PNG files with matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PERCENTILE = 99.5


def kind_of(array: np.ndarray) -> str | None:
    """``image`` for ``(N, C, H, W)``, ``tokens`` for ``(N, T, D)`` (a sequence of embeddings), None for anything
    else (a flat feature vector has no picture)."""
    if array.ndim == 4 and min(array.shape[2:]) > 1:
        return "image"
    if array.ndim == 3:
        return "tokens"
    return None


def relevance_map(sample: np.ndarray) -> np.ndarray:
    """One sample's map: ``(C, H, W)`` summed over channels to ``(H, W)``, ``(T, D)`` summed to ``(T,)``."""
    return sample.sum(axis=0) if sample.ndim == 3 else sample.sum(axis=-1)


def symmetric_limit(values: np.ndarray, percentile: float = PERCENTILE) -> float:
    """The colour scale's bound ``v`` (the map is shown on ``[-v, v]``): a high percentile of ``|values|``.

    Falls back to the largest ``|value|`` when the percentile is 0 (a sparse map), and to 1 for an all-zero map,
    so that the scale is never degenerate. Non-finite values are ignored.
    """
    finite = np.abs(values[np.isfinite(values)])
    if finite.size == 0:
        return 1.0
    limit = float(np.percentile(finite, percentile))
    if limit <= 0:
        limit = float(finite.max())
    return limit if limit > 0 else 1.0


def normalized(values: np.ndarray, limit: float) -> np.ndarray:
    """``values / limit`` clipped to ``[-1, 1]`` (NaN shown as 0)."""
    return np.clip(np.nan_to_num(values / limit, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def grey(image: np.ndarray) -> np.ndarray:
    """An input sample ``(C, H, W)`` as a ``(H, W)`` grey level in ``[0, 1]`` (channel mean, min-max: the input is
    context, not data, so min-max is right here)."""
    plane = image.mean(axis=0) if image.ndim == 3 else image
    low, high = float(np.nanmin(plane)), float(np.nanmax(plane))
    return np.zeros_like(plane) if high <= low else (plane - low) / (high - low)


def colours(scaled: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """RGBA (uint8) of a map in [-1, 1]: blue (-1), white (exactly 0), red (+1), linear in between (the LRP
    convention; matplotlib's ``bwr`` up to its 256-step quantization). Over a grey ``background`` in [0, 1] the
    relevance is blended in by its magnitude, so where nothing is relevant the input shows through."""
    s = np.clip(np.nan_to_num(scaled), -1.0, 1.0)[..., None]
    red, blue = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    rgb = np.where(s >= 0, 1.0 - s * (1.0 - red), 1.0 + s * (1.0 - blue))
    if background is not None:
        alpha = np.abs(s)
        rgb = alpha * rgb + (1.0 - alpha) * background[..., None]
    rgba = np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=-1)
    return (rgba * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class Picture:
    """One heatmap to draw: which input and sample, the signed map scaled to [-1, 1], the input for an overlay."""

    input_name: str
    sample: int  # the sample's global index
    scaled: np.ndarray  # (H, W) in [-1, 1]
    limit: float
    background: np.ndarray | None  # (H, W) grey in [0, 1], or None


def pictures(result, positions=None) -> list[Picture]:
    """A picture per image input and sample (``positions``: which samples, default all); over the input when the
    audit kept its inputs."""
    relevance = result.relevance or {}
    inputs = result.inputs
    names = [name for name in relevance if name not in ("targets", "output_relevance")]
    out = []
    for name in names:
        array = relevance[name]
        if kind_of(array) != "image":
            continue
        for position in range(array.shape[0]) if positions is None else positions:
            heat = relevance_map(array[position])
            limit = symmetric_limit(heat)
            background = grey(inputs[name][position]) if inputs and name in inputs else None
            sample = result.samples[position].index if position < len(result.samples) else position
            out.append(Picture(name, sample, normalized(heat, limit), limit, background))
    return out


def file_name(model_path: str, picture: Picture) -> str:
    """``<model stem>.<input>.sample<index>.png`` with the input name made safe for a file name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in picture.input_name)[:64] or "input"
    return f"{Path(model_path).stem}.{safe}.sample{picture.sample:05d}.png"


@dataclass(frozen=True)
class TokenRow:
    """One sample's relevance per token of a sequence input, for the per-token colouring of the HTML report."""

    input_name: str
    sample: int  # the sample's global index
    scaled: np.ndarray  # (T,) in [-1, 1]
    values: np.ndarray  # (T,) the relevance itself
    limit: float
    labels: tuple[str, ...]  # the token ids when the inputs were kept, else the positions


def token_rows(result, positions) -> list[TokenRow]:
    """Per-token relevance of sequence inputs: token-id inputs (relevance already per token, ``(N, T)``) and
    embedding inputs ``(N, T, D)`` (summed over ``D``)."""
    relevance = result.relevance or {}
    token_names = set(getattr(result, "token_inputs", ()))
    rows = []
    for name, array in relevance.items():
        if name in ("targets", "output_relevance"):
            continue
        if not (name in token_names and array.ndim == 2) and kind_of(array) != "tokens":
            continue
        for position in positions:
            per_token = array[position] if array.ndim == 2 else relevance_map(array[position])
            limit = symmetric_limit(per_token)
            ids = (result.inputs or {}).get(name) if name in token_names else None
            labels = (
                tuple(str(int(v)) for v in np.asarray(ids[position]).reshape(-1))
                if ids is not None and np.asarray(ids[position]).size == per_token.size
                else tuple(str(k) for k in range(per_token.size))
            )
            sample = result.samples[position].index
            rows.append(TokenRow(name, sample, normalized(per_token, limit), per_token, limit, labels))
    return rows
