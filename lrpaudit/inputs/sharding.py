"""Sharded audits: the I-th of N disjoint, deterministic slices of an input set, in whole batches.

Batch ``b`` (0-based, in input order, formed exactly as an unsharded audit forms its batches of ``--batch-size``)
belongs to shard ``(b mod N) + 1``: round robin over whole batches. Sample indices stay global.

- Whole batches, because torch's kernels give a sample different last bits in batches of other sizes: a sample is
  audited in the batch an unsharded run puts it in, so merged shards equal the unsharded report number for number.
- Round robin, because no shard needs the sample count before it starts (a ``.npy`` file is read only at the
  shard's own batches, random samples are drawn only for them) and every shard gets the same work to one batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TEXT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: I must be between 1 and N")

    def owns(self, batch_number: int) -> bool:
        """Whether the 0-based ``batch_number``-th batch of the input set is this shard's."""
        return batch_number % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (1 <= I <= N) as a Shard; a ValueError that says what is expected otherwise."""
    match = _TEXT.fullmatch(text)
    if not match:
        raise ValueError(f"expected I/N such as 2/4 (the I-th of N shards), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: I must be between 1 and N (N >= 1)")
    return Shard(index, count)
