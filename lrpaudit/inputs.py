"""Sample inputs: .npy / .npz files, folders of them, or seeded random draws; validated against the model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError


@dataclass
class Batch:
    """One batch of samples: arrays by graph input name, and where each sample came from."""

    arrays: dict[str, np.ndarray]
    sources: list[str]
    first_index: int

    @property
    def size(self) -> int:
        return len(self.sources)


def concrete_shape(declared: list[int | str | None], batch: int, name: str, override=None) -> tuple[int, ...]:
    """Fill a declared shape for ``batch`` samples: axis 0 is the batch; other dynamic dims need ``override``.

    ``override`` (``--input-shape``) is a full shape whose axis 0 is ignored, or the shape of one sample.
    """
    if override is not None:
        dims = tuple(int(d) for d in override)
        if len(dims) == len(declared):
            return (batch, *dims[1:])
        if len(dims) == len(declared) - 1:
            return (batch, *dims)
        raise InputError(f"--input-shape {list(dims)} does not fit input {name!r} of rank {len(declared)}")
    shape = []
    for axis, dim in enumerate(declared):
        if axis == 0:
            shape.append(batch)
        elif isinstance(dim, int):
            shape.append(dim)
        else:
            raise InputError(
                f"input {name!r} has a dynamic dimension {axis} ({dim or '?'}); give --input-shape"
            )
    return tuple(shape)


def fixed_batch(declared: dict[str, list[int | str | None]]) -> int | None:
    """The batch size the model declares on axis 0, if it fixes one."""
    sizes = {dims[0] for dims in declared.values() if dims and isinstance(dims[0], int)}
    return sizes.pop() if len(sizes) == 1 else None


def peek_shapes(path: str | Path, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Array shapes of the first input file (memory-mapped, nothing loaded), for models without declared shapes."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        return {}
    try:
        if files[0].suffix == ".npy":
            return {names[0]: tuple(np.load(files[0], mmap_mode="r", allow_pickle=False).shape)}
        with np.load(files[0], allow_pickle=False) as data:
            return {name: tuple(data[name].shape) for name in names if name in data.files}
    except Exception:
        return {}


def random_batches(
    declared: dict[str, list[int | str | None]],
    count: int,
    batch_size: int,
    seed: int = 0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Iterator[Batch]:
    """``count`` standard-normal samples per input, drawn deterministically from ``seed``, in batches."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        arrays = {
            name: rng.standard_normal(
                concrete_shape(dims, size, name, (input_shapes or {}).get(name)), dtype=np.float64
            ).astype(np.float32)
            for name, dims in declared.items()
        }
        yield Batch(arrays, [f"random[seed={seed}]#{start + i}" for i in range(size)], start)


def _check_array(name: str, array: np.ndarray, declared: list[int | str | None], source: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{source}: input {name!r} has dtype {array.dtype}; expected a floating-point array")
    if array.ndim == len(declared) - 1:
        array = array[None]
    if array.ndim != len(declared):
        want = "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in declared) + "]"
        raise InputError(f"{source}: input {name!r} expects shape {want}, got {list(array.shape)}")
    for axis, (want, have) in enumerate(zip(declared, array.shape)):
        if axis > 0 and isinstance(want, int) and want != have:
            raise InputError(
                f"{source}: input {name!r} expects size {want} on axis {axis}, got shape {list(array.shape)}"
            )
    if not np.isfinite(array).all():
        raise InputError(f"{source}: input {name!r} contains NaN or Inf values")
    return array.astype(np.float32) if array.dtype != np.float64 else array


def load_arrays(
    path: str | Path, declared: dict[str, list[int | str | None]]
) -> Iterator[tuple[dict[str, np.ndarray], str]]:
    """Read one .npy/.npz file (or every such file in a folder, one at a time) into per-file input dicts."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path}: folder has no .npy or .npz files")
    for file in files:
        try:
            data = np.load(file, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{file}: not a readable .npy/.npz file ({type(exc).__name__})") from exc
        if isinstance(data, np.lib.npyio.NpzFile):
            missing = [name for name in declared if name not in data.files]
            if missing:
                raise InputError(f"{file}: missing arrays for graph inputs {missing} (has {data.files})")
            arrays = {
                name: _check_array(name, data[name], dims, str(file)) for name, dims in declared.items()
            }
        else:
            if len(declared) != 1:
                raise InputError(
                    f"{file}: the model has inputs {list(declared)}; give a .npz with one array each"
                )
            name, dims = next(iter(declared.items()))
            arrays = {name: _check_array(name, data, dims, str(file))}
        sizes = {a.shape[0] for a in arrays.values()}
        if len(sizes) != 1:
            raise InputError(f"{file}: inputs have different sample counts {sorted(sizes)}")
        yield arrays, str(file)


def file_batches(
    path: str | Path, declared: dict[str, list[int | str | None]], batch_size: int
) -> Iterator[Batch]:
    """Samples from files, re-batched to ``batch_size``; memory holds one file plus one batch."""
    index = 0
    for arrays, source in load_arrays(path, declared):
        count = next(iter(arrays.values())).shape[0]
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            chunk = {name: a[start : start + size] for name, a in arrays.items()}
            yield Batch(chunk, [f"{source}#{start + i}" for i in range(size)], index)
            index += size
