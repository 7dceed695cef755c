"""Sample batches: .npy / .npz files, folders of them, or seeded random draws; validated against the model.

Batches are planned before they are read: ``plan_*`` yield :class:`Pending` batches (size, first sample index,
and how to read them), so that a sharded audit (:mod:`.sharding`) reads and draws only its own batches. The
``*_batches`` functions read every planned batch.

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

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from ..files import check_regular, special_kind
from .limits import available_memory, check_input_memory
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


@dataclass(frozen=True)
class Pending:
    """A planned batch: how many samples, the global index of its first one, and how to read (or draw) it."""

    size: int
    first_index: int
    read: Callable[[], Batch]


def read_all(plan: Iterator[Pending]) -> Iterator[Batch]:
    """Every planned batch, read in turn."""
    for pending in plan:
        yield pending.read()


def peek_shapes(path: str | Path, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Array shapes of the first input file (memory-mapped, nothing loaded), for models without declared shapes."""
    path = Path(path)
    if special_kind(path) is not None:
        return {}  # refused, naming the file, when the inputs are read
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files or not files[0].exists() or special_kind(files[0]) is not None:
        return {}
    try:
        if files[0].suffix == ".npy":
            return {names[0]: tuple(np.load(files[0], mmap_mode="r", allow_pickle=False).shape)}
        with np.load(files[0], allow_pickle=False) as data:
            return {name: tuple(data[name].shape) for name in names if name in data.files}
    except Exception:
        return {}


def sample_generator(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` under ``seed``: child ``index`` of ``SeedSequence(seed)``.

    Each sample has its own stream, so sample ``i`` is the same numbers whatever the batch size, the shard or the
    number of samples drawn (a shard draws only its own samples, without drawing the ones before them).
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def plan_random(
    declared: dict[str, list[int | str | None]],
    count: int,
    batch_size: int,
    seed: int = 0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    vocab: dict[str, int] | None = None,
) -> Iterator[Pending]:
    """``count`` samples per input, in batches: standard normal (float64 draws stored as float32), and for the
    token inputs in ``vocab`` (name -> number of ids) uniform integers ``0 .. vocab - 1``. Sample ``i`` is drawn
    from :func:`sample_generator` ``(seed, i)``, every input of a sample in declaration order."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed {seed!r}: must be an integer >= 0 (--seed, or seed: in a manifest)")
    first = min(batch_size, count)
    shapes = {
        name: concrete_shape(dims, first, name, (input_shapes or {}).get(name))[1:]
        for name, dims in declared.items()
    }
    check_input_memory(first, shapes, 8, "--random")
    vocab = vocab or {}

    def draw(start: int, size: int) -> Batch:
        arrays = {
            name: np.empty((size, *shape), dtype=np.int64 if name in vocab else np.float32)
            for name, shape in shapes.items()
        }
        for i in range(size):
            rng = sample_generator(seed, start + i)
            for name, shape in shapes.items():
                if name in vocab:
                    arrays[name][i] = rng.integers(0, vocab[name], shape, dtype=np.int64)
                else:
                    arrays[name][i] = rng.standard_normal(shape, dtype=np.float64)
        return Batch(arrays, [f"random[seed={seed}]#{start + i}" for i in range(size)], start)

    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        yield Pending(size, start, lambda start=start, size=size: draw(start, size))


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
    """The batches of :func:`plan_random`, drawn."""
    return read_all(plan_random(declared, count, batch_size, seed, input_shapes, vocab))


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
    """``np.load`` without pickles: ``.npy`` memory-mapped, ``.npz`` lazily; a bad file is an InputError.

    Only regular files are opened: a FIFO would block, a device (``/dev/zero``) never ends.
    """
    check_regular(file, InputError, "regular .npy or .npz file")
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
    """One array of a .npz file; an object array or a damaged member is an InputError.

    A member is read whole, so first its header: an array that declares more bytes than the member holds (a
    damaged or forged file), or more than the memory available now, is refused before anything is allocated.
    """
    _check_member_size(data, file, name)
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


def _check_member_size(data, file: Path, name: str) -> None:
    try:
        info = data.zip.getinfo(f"{name}.npy")
        with data.zip.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(handle)
    except Exception:
        return  # not a plain .npy member: np.load names the problem
    needed = math.prod(shape) * dtype.itemsize
    if needed > info.file_size:
        raise InputError(
            f"{file}: array {name!r} declares shape {list(shape)} ({needed:,} bytes) but the member holds "
            f"{info.file_size:,} bytes (a damaged or forged file)"
        )
    free = available_memory()
    if free is not None and needed > free:
        raise InputError(
            f"{file}: array {name!r} needs {needed / 2**30:.1f} GiB to be read, more than the "
            f"{free / 2**30:.1f} GiB available (a .npz member is read whole: save large inputs as .npy)"
        )


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


def plan_files(
    path: str | Path,
    declared: dict[str, list[int | str | None]],
    batch_size: int,
    integer: frozenset[str] = frozenset(),
) -> Iterator[Pending]:
    """Samples from files, re-batched to ``batch_size``, lazily: a ``.npy`` file is read one batch at a time, and
    only the batches that are read; ``integer`` inputs (token ids) stay integers."""
    index = 0
    for arrays, source in load_arrays(path, declared):
        yield from _chunks(arrays, source, batch_size, index, integer)
        index += next(iter(arrays.values())).shape[0]


def file_batches(
    path: str | Path,
    declared: dict[str, list[int | str | None]],
    batch_size: int,
    integer: frozenset[str] = frozenset(),
) -> Iterator[Batch]:
    """The batches of :func:`plan_files`, read."""
    return read_all(plan_files(path, declared, batch_size, integer))


def plan_arrays(
    arrays: dict[str, np.ndarray],
    declared: dict[str, list[int | str | None]],
    batch_size: int,
    integer: frozenset[str] = frozenset(),
) -> Iterator[Pending]:
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
) -> Iterator[Pending]:
    """Consecutive batches of one source, each read, checked and converted on its own when it is read."""
    count = next(iter(arrays.values())).shape[0]
    shapes = {name: tuple(a.shape[1:]) for name, a in arrays.items()}
    check_input_memory(min(batch_size, count), shapes, 8, source)

    def read(start: int, size: int) -> Batch:
        chunk = {
            name: _finish(name, a[start : start + size], source, start, integer) for name, a in arrays.items()
        }
        return Batch(chunk, [f"{source}#{start + i}" for i in range(size)], index + start)

    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        yield Pending(size, index + start, lambda start=start, size=size: read(start, size))
