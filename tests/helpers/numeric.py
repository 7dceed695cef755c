"""Numeric comparisons the tests share."""

from __future__ import annotations

import numpy as np
import torch


def as_float64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def rel_diff(ours, ref) -> float:
    """``max |ours - ref| / max |ref|`` over tensors or arrays (shapes must agree); the absolute difference where
    the reference is all zero."""
    ours, ref = as_float64(ours), as_float64(ref)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    scale = np.abs(ref).max() if ref.size else 0.0
    diff = np.abs(ours - ref).max() if ref.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)
