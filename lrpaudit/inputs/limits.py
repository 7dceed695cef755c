"""Resource limits checked before anything large is allocated.

Three guards, all InputErrors (exit 2) that name the model and the numbers:
- one sample of one input may hold at most ``inputs.shapes.MAX_SAMPLE_ELEMENTS`` (2**28) elements: declared shapes such
  as ``[1, 3, 100000, 100000]`` are refused before a sample is drawn or read;
- one batch of inputs (8 bytes an element: random draws are float64) must fit in the memory available now,
  checked before it is drawn or read;
- one batch's activations, counted from the shapes the IR was specialized on, times ``COPIES`` (the activations,
  the relevance flowing back and the rules' temporaries), must fit in the memory available now (``MemAvailable``,
  and the cgroup limit when there is one); the message suggests a smaller ``--batch-size``.

A TorchScript graph is built by running the module once on a sample of the input shape, so a blow-up inside it
is met as an allocation failure; the command line reports any out-of-memory condition (``MemoryError``, torch's
allocator errors) as exit 2 with the same suggestion, never as an internal error.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import InputError
from ..ir import Graph

COPIES = 3


def available_memory() -> int | None:
    """Bytes of memory this process can still get (Linux: MemAvailable, capped by a cgroup v2 limit); None if
    unknown."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        free = next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            free = min(free, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return free


def check_input_memory(
    batch: int, sample_shapes: dict[str, tuple[int, ...]], itemsize: int, where: str
) -> None:
    """Refuse to draw or read one batch of inputs that cannot fit in the available memory."""
    need = batch * itemsize * sum(math.prod(shape) for shape in sample_shapes.values())
    available = available_memory()
    if available is not None and need > available:
        raise InputError(
            f"{where}: one batch of {batch} inputs needs {need / 2**30:.3g} GiB, more than the "
            f"{available / 2**30:.3g} GiB available; lower --batch-size"
        )


def batch_memory(graph: Graph, itemsize: int) -> int:
    """Estimated peak bytes of one batch: every activation of the specialized graph, ``COPIES`` times."""
    elements = sum(math.prod(shape) for shape in graph.shapes.values())
    return COPIES * elements * itemsize


def check_batch_memory(graph: Graph, itemsize: int, where: str, available: int | None = None) -> None:
    """Refuse a batch whose activations cannot fit in the available memory, before running it."""
    available = available_memory() if available is None else available
    need = batch_memory(graph, itemsize)
    if available is not None and need > available:
        raise InputError(
            f"{where}: one batch needs about {need / 2**30:.3g} GiB for its activations and relevance, more than "
            f"the {available / 2**30:.3g} GiB available; lower --batch-size or audit smaller inputs"
        )
