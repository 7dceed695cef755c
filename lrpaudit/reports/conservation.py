"""Where the relevance goes, as numbers for pictures: the conservation curve and the leak per layer by category.

The curve follows the propagation (output to input, reverse graph order). After node ``k`` the relevance still in
flight is ``r_output - sum_{j <= k} leak_j``: it starts at the explained score and ends at the relevance the
inputs received. Figures are fractions of each sample's output relevance ``r_output`` (samples with nothing to
explain are left out), so samples of different scores share one scale; the plots show their mean and range.
The leak of each node is split into the accounted categories (bias, stabilizer, ... and the unexplained residual)
exactly as the audit records them, so the stacked bars add up to the node's leak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..display import safe
from ..verdicts import CATEGORIES, CATEGORY_WORDS


@dataclass(frozen=True)
class Conservation:
    """One run's conservation figures, nodes in propagation order (output first)."""

    labels: tuple[str, ...]  # node ids, output to input
    remaining: np.ndarray  # (samples, nodes + 1): relevance in flight before the first node and after each
    shares: dict[str, np.ndarray]  # category -> (samples, nodes): that node's share of the leak
    samples: int  # samples with something to explain (the rows above)

    @property
    def mean_remaining(self) -> np.ndarray:
        return self.remaining.mean(axis=0) if self.samples else np.ones(len(self.labels) + 1)

    def mean_shares(self) -> dict[str, np.ndarray]:
        return {
            key: (v.mean(axis=0) if self.samples else np.zeros(len(self.labels)))
            for key, v in self.shares.items()
        }

    def category_label(self, key: str) -> str:
        return "unexplained" if key == "residual" else CATEGORY_WORDS[key]


def conservation(result) -> Conservation:
    """The conservation figures of an AuditResult (reverse graph order; NaN where the audit had NaN)."""
    layers = list(reversed(result.layers))
    r_output = np.array([sample.r_output for sample in result.samples], dtype=np.float64)
    keep = np.nonzero(r_output != 0)[0]
    scale = r_output[keep][:, None]
    labels = tuple(safe(layer.node_id) for layer in layers)
    if not layers:
        return Conservation(
            labels, np.ones((len(keep), 1)), {key: np.zeros((len(keep), 0)) for key in CATEGORIES}, len(keep)
        )
    leak = np.stack([layer.values["leak"][keep] for layer in layers], axis=1) / scale
    remaining = np.concatenate([np.ones((len(keep), 1)), 1.0 - np.cumsum(leak, axis=1)], axis=1)
    shares = {
        key: np.stack([layer.values[key][keep] for layer in layers], axis=1) / scale for key in CATEGORIES
    }
    return Conservation(labels, remaining, shares, len(keep))
