"""Sample inputs (:mod:`.batches`: files, arrays or seeded draws, planned before they are read), the shapes they
must have (:mod:`.shapes`), which batches a shard holds (:mod:`.sharding`) and the memory checks (:mod:`.limits`).

The batch functions are imported on first use (PEP 562): the command line parses ``--input-shape`` and
``--shard`` through :mod:`.shapes` and :mod:`.sharding` without loading numpy.
"""

from .._lazy import lazy_exports

_PUBLIC = {
    "Batch": ".batches",
    "Pending": ".batches",
    "file_batches": ".batches",
    "first_shapes": ".batches",
    "load_arrays": ".batches",
    "peek_shapes": ".batches",
    "plan_arrays": ".batches",
    "plan_files": ".batches",
    "plan_random": ".batches",
    "random_batches": ".batches",
    "read_all": ".batches",
    "sample_generator": ".batches",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
