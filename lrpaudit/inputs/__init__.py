"""Sample inputs (:mod:`.batches`: files, arrays or seeded draws, planned before they are read), the shapes they
must have (:mod:`.shapes`), which batches a shard holds (:mod:`.sharding`) and the memory checks (:mod:`.limits`).

The batch functions are imported on first use (PEP 562): the command line parses ``--input-shape`` and
``--shard`` through :mod:`.shapes` and :mod:`.sharding` without loading numpy.
"""

_PUBLIC = {
    "Batch": ".batches",
    "Pending": ".batches",
    "array_batches": ".batches",
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


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
