"""The Python API: load a model, build its IR for given inputs, check forward fidelity, audit LRP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fidelity import FidelityResult, check_fidelity
from .frontends import load_model
from .inputs import Batch, random_batches
from .ir import Graph

__all__ = ["load_model", "inspect_model", "random_batches", "Batch", "Graph", "FidelityResult"]


def inspect_model(
    path: str | Path,
    random: int = 1,
    seed: int = 0,
    intermediates: bool = True,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[object, Graph, FidelityResult]:
    """Load a model, build the canonical IR for ``random`` seeded samples and check it against the runtime."""
    model = load_model(path)
    batch = next(random_batches(model.declared_shapes(), random, random, seed, input_shapes))
    graph = model.graph({name: a.shape for name, a in batch.arrays.items()})
    feeds = {name: np.ascontiguousarray(a) for name, a in batch.arrays.items()}
    result = check_fidelity(model, graph, feeds, dtype="float32", intermediates=intermediates)
    return model, graph, result
