"""Input shapes: the model's declared shapes made concrete for a batch, ``--input-shape`` text, the size limit.

Limit: one sample of one input may hold at most ``MAX_SAMPLE_ELEMENTS`` (2**28, 2 GiB in float64) elements;
larger declared or requested shapes are refused before anything is allocated.
"""

from __future__ import annotations

import math

from ..errors import InputError

MAX_SAMPLE_ELEMENTS = 1 << 28  # per input, per sample: refused before allocating


def parse_shape(text: str | None) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape 1,3,32,32`` or ``name=1,3,32,32``, several separated by ``;``; ``*`` keys the unnamed one.

    Raises :class:`ShapeTextError` (a ValueError) naming the bad part; the CLI turns it into a usage error.
    """
    if not text:
        return None
    shapes = {}
    for part in text.split(";"):
        name, _, dims = part.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError as exc:
            raise ShapeTextError(f"not a shape: {part!r} (expected e.g. 1,3,32,32)") from exc
        if any(d < 1 for d in shape):
            raise ShapeTextError(f"not a shape: {part!r} (every dimension must be >= 1)")
        shapes[name or "*"] = shape
    return shapes


class ShapeTextError(ValueError):
    """An ``--input-shape`` text that is not a shape."""


def name_unnamed(shapes: dict[str, tuple[int, ...]] | None, input_names: list[str]):
    """``{"*": shape}`` (a shape given without a name) keyed by the model's first input instead."""
    if shapes and "*" in shapes and input_names:
        return {**{k: v for k, v in shapes.items() if k != "*"}, input_names[0]: shapes["*"]}
    return shapes


def concrete_shape(declared: list[int | str | None], batch: int, name: str, override=None) -> tuple[int, ...]:
    """Fill a declared shape for ``batch`` samples: axis 0 is the batch; other dynamic dims need ``override``.

    ``override`` (``--input-shape``) is a full shape whose axis 0 is ignored, or the shape of one sample.
    """
    if not declared:
        raise InputError(
            f"input {name!r} is declared as a scalar (rank 0): lrpaudit needs axis 0 as the batch"
        )
    if override is not None:
        dims = tuple(int(d) for d in override)
        if any(d < 1 for d in dims):
            raise InputError(f"--input-shape {list(dims)} for input {name!r}: every dimension must be >= 1")
        if len(dims) == len(declared):
            return check_sample_size(name, (batch, *dims[1:]))
        if len(dims) == len(declared) - 1:
            return check_sample_size(name, (batch, *dims))
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
    return check_sample_size(name, tuple(shape))


def check_sample_size(name: str, shape: tuple[int, ...], source: str | None = None) -> tuple[int, ...]:
    """``shape`` if one sample (axis 0 is the batch) holds at most ``MAX_SAMPLE_ELEMENTS``; else an InputError."""
    elements = math.prod(shape[1:])
    if elements > MAX_SAMPLE_ELEMENTS:
        where = f"{source}: " if source else ""
        raise InputError(
            f"{where}input {name!r} of shape {list(shape)} has {elements:,} elements per sample; lrpaudit refuses "
            f"more than {MAX_SAMPLE_ELEMENTS:,} (2**28) per sample"
        )
    return shape


def check_declared(declared: dict[str, list[int | str | None]], path) -> dict[str, list[int | str | None]]:
    """A model's declared input shapes, refused when an input is a scalar or one sample is too large."""
    for name, dims in declared.items():
        if not dims:
            raise InputError(
                f"{path}: input {name!r} is declared as a scalar (rank 0); lrpaudit needs axis 0 as the batch"
            )
        check_sample_size(name, tuple(d if isinstance(d, int) else 1 for d in dims), str(path))
    return declared


def check_shape_names(input_shapes: dict | None, declared: dict, path) -> None:
    """Every name given with ``--input-shape NAME=...`` must be a graph input."""
    unknown = [name for name in input_shapes or {} if name != "*" and name not in declared]
    if unknown:
        raise InputError(
            f"{path}: --input-shape names {unknown}, but the model's inputs are {list(declared)}"
        )


def fixed_batch(declared: dict[str, list[int | str | None]]) -> int | None:
    """The batch size the model declares on axis 0, if it fixes one."""
    sizes = {dims[0] for dims in declared.values() if dims and isinstance(dims[0], int)}
    return sizes.pop() if len(sizes) == 1 else None
