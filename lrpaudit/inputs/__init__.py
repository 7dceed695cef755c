"""Sample inputs: .npy / .npz files, folders of them, or seeded random draws; validated against the model.

Input files are data, never code: ``np.load(..., allow_pickle=False)`` refuses pickled objects. Element types:
float64 stays float64; float32 and float16 become float32; integer arrays (e.g. uint8 images) are converted to
float32 as they are, with no scaling; bool, complex, string and object arrays are refused. NaN/Inf values are
refused, naming the file and the sample. Inputs that take token ids (``integer``: a text model's ``input_ids``)
must be integer arrays and become int64; seeded draws for them are uniform over ``0 .. vocab - 1``.

Streaming: ``.npy`` files are memory-mapped and read one batch at a time (each batch is checked and converted on
its own), so memory holds one batch whatever the number of samples; a ``.npz`` member is read whole, one file at a
time. Limit: one sample of one input may hold at most ``MAX_SAMPLE_ELEMENTS`` (2**28, 2 GiB in float64) elements;
larger declared or requested shapes are refused before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from .limits import check_input_memory
from .shapes import check_sample_size, concrete_shape


@dataclass
class Batch:
    """One batch of samples: arrays by graph input name, and where each sample came from."""

    arrays: dict[str, np.ndarray]
    sources: list[str]
    first_index: int

    @property
    def size(self) -> int:
        return len(self.sources)


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


def first_shapes(
    declared: dict[str, list[int | str | None]],
    count: int,
    batch_size: int,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """The input shapes of the first batch of ``count`` seeded draws."""
    first = min(batch_size, count)
    return {
        name: concrete_shape(dims, first, name, (input_shapes or {}).get(name))
        for name, dims in declared.items()
    }


def random_batches(
    declared: dict[str, list[int | str | None]],
    count: int,
    batch_size: int,
    seed: int = 0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    vocab: dict[str, int] | None = None,
) -> Iterator[Batch]:
    """``count`` samples per input, drawn deterministically from ``seed``, in batches: standard normal, and for
    the token inputs in ``vocab`` (name -> number of ids) uniform integers ``0 .. vocab - 1``."""
    rng = np.random.default_rng(seed)
    vocab = vocab or {}
    first = min(batch_size, count)
    shapes = {
        name: shape[1:] for name, shape in first_shapes(declared, count, batch_size, input_shapes).items()
    }
    check_input_memory(first, shapes, 8, "--random")
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        arrays = {}
        for name, dims in declared.items():
            shape = concrete_shape(dims, size, name, (input_shapes or {}).get(name))
            if name in vocab:
                arrays[name] = rng.integers(0, vocab[name], shape, dtype=np.int64)
            else:
                arrays[name] = rng.standard_normal(shape, dtype=np.float64).astype(np.float32)
        yield Batch(arrays, [f"random[seed={seed}]#{start + i}" for i in range(size)], start)


def _check_array(name: str, array: np.ndarray, declared: list[int | str | None], source: str) -> np.ndarray:
    """Element type and shape against the declaration (nothing read from a memory map); a one-sample array
    without the batch axis gets one."""
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"{source}: input {name!r} has dtype {array.dtype}; expected a floating-point (or integer) array"
        )
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
    check_sample_size(name, tuple(array.shape), source)
    return array


def _finish(name: str, chunk: np.ndarray, source: str, first: int, integer: frozenset[str]) -> np.ndarray:
    """One batch read into memory as float64 or float32 (token ids: int64), refused if it holds NaN/Inf (naming
    the sample)."""
    if name in integer:
        if not np.issubdtype(chunk.dtype, np.integer):
            raise InputError(
                f"{source}: input {name!r} takes integer token ids; got an array of {chunk.dtype}"
            )
        return np.array(chunk, dtype=np.int64)
    chunk = np.array(chunk, dtype=np.float64 if chunk.dtype == np.float64 else np.float32)
    finite = np.isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1)
    if not finite.all():
        bad = first + int(np.argmin(finite))
        raise InputError(f"{source}: input {name!r} contains NaN or Inf values (sample {bad})")
    return chunk


_PICKLED = (
    "holds pickled Python objects; lrpaudit never unpickles input files (save a numeric array with np.save / "
    "np.savez)"
)


def _open(file: Path):
    """``np.load`` without pickles: ``.npy`` memory-mapped, ``.npz`` lazily; a bad file is an InputError."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or exc})") from exc
    if head[:1] == b"\x80":
        raise InputError(f"{file}: {_PICKLED}")
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):
        raise InputError(f"{file}: not a .npy or .npz file (no NumPy or zip header)")
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        text = first_line(exc)
        if "pickle" in text.lower() or "python objects" in text.lower():
            raise InputError(f"{file}: {_PICKLED}") from exc
        raise InputError(
            f"{file}: not a readable .npy/.npz file ({type(exc).__name__}: {text[:200]})"
        ) from exc


def _member(data, file: Path, name: str) -> np.ndarray:
    """One array of a .npz file; an object array or a damaged member is an InputError."""
    try:
        return data[name]
    except Exception as exc:
        text = first_line(exc)
        if "pickle" in text.lower() or "object arrays" in text.lower():
            raise InputError(
                f"{file}: array {name!r} holds pickled Python objects; lrpaudit never unpickles"
            ) from exc
        raise InputError(
            f"{file}: array {name!r} cannot be read ({type(exc).__name__}: {text[:200]})"
        ) from exc


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
        data = _open(file)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                missing = [name for name in declared if name not in data.files]
                if missing:
                    raise InputError(f"{file}: missing arrays for graph inputs {missing} (has {data.files})")
                arrays = {
                    name: _check_array(name, _member(data, file, name), dims, str(file))
                    for name, dims in declared.items()
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
    path: str | Path,
    declared: dict[str, list[int | str | None]],
    batch_size: int,
    integer: frozenset[str] = frozenset(),
) -> Iterator[Batch]:
    """Samples from files, re-batched to ``batch_size``, lazily: a ``.npy`` file is read one batch at a time."""
    index = 0
    for arrays, source in load_arrays(path, declared):
        yield from _chunks(arrays, source, batch_size, index, integer)
        index += next(iter(arrays.values())).shape[0]


def array_batches(
    arrays: dict[str, np.ndarray],
    declared: dict[str, list[int | str | None]],
    batch_size: int,
    integer: frozenset[str] = frozenset(),
) -> Iterator[Batch]:
    """In-memory arrays by graph input name (the Python API), checked and batched exactly like files."""
    missing = [name for name in declared if name not in arrays]
    if missing:
        raise InputError(f"no array given for graph inputs {missing} (given: {list(arrays)})")
    checked = {
        name: _check_array(name, np.asarray(arrays[name]), dims, "array") for name, dims in declared.items()
    }
    sizes = {a.shape[0] for a in checked.values()}
    if len(sizes) != 1:
        raise InputError(f"the input arrays have different sample counts {sorted(sizes)}")
    yield from _chunks(checked, "array", batch_size, 0, integer)


def _chunks(
    arrays: dict[str, np.ndarray], source: str, batch_size: int, index: int, integer: frozenset[str]
) -> Iterator[Batch]:
    """Consecutive batches of one source, each read, checked and converted on its own."""
    count = next(iter(arrays.values())).shape[0]
    shapes = {name: tuple(a.shape[1:]) for name, a in arrays.items()}
    check_input_memory(min(batch_size, count), shapes, 8, source)
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        chunk = {
            name: _finish(name, a[start : start + size], source, start, integer) for name, a in arrays.items()
        }
        yield Batch(chunk, [f"{source}#{start + i}" for i in range(size)], index + start)
