"""Where the batch lives inside a value: the algebra behind ``batch_axis.batch_first``.

A value's *layout* describes each of its axes as a sequence of *atoms* (dimension factors, major first); one atom,
the batch atom, is the axis of the samples. A value straight from the graph input has the batch alone on axis 0;
inside code written for sequence-first tensors (``nn.MultiheadAttention``) it moves: ``(L, B, E)``, merged with
the heads ``(B*H, L, D)``, or with the positions ``(L*B, E)``. The *canonical* form of a value puts the batch in
front and keeps every other atom in its order: ``(B,) +`` one axis per original axis made of its other atoms (an
axis that was the batch alone disappears). Reshapes keep the order of the atoms, so the canonical form of a
reshape's output is a reshape of its input's canonical form; permutes, slices and the other ops map their axes.

With a batch of one the batch atom has size 1 and its place is a convention: any place gives the same canonical
values (a size-1 atom changes no size), so nothing is refused because of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Axis = tuple["Atom", ...]


@dataclass(frozen=True)
class Atom:
    size: int
    batch: bool = False


Layout = tuple[Axis, ...]


def fresh(size: int) -> Axis:
    """An axis of ``size`` with no known structure (size 1: no atom at all)."""
    return () if size == 1 else (Atom(size),)


def identity(shape: tuple[int, ...], batch: int) -> Layout:
    """The layout of a value with the batch alone on axis 0."""
    return ((Atom(batch, True),), *(fresh(s) for s in shape[1:]))


def sizes(layout: Layout) -> tuple[int, ...]:
    return tuple(math.prod(a.size for a in axis) for axis in layout)


def batch_place(layout: Layout) -> int | None:
    """The axis holding the batch atom."""
    return next((i for i, axis in enumerate(layout) if any(a.batch for a in axis)), None)


def is_identity(layout: Layout) -> bool:
    return len(layout) > 0 and len(layout[0]) == 1 and layout[0][0].batch


def holds_batch(layout: Layout, axis: int) -> bool:
    """Whether ``axis`` holds samples (the batch atom with more than one sample)."""
    return any(a.batch and a.size > 1 for a in layout[axis])


def kept_axes(layout: Layout) -> list[int]:
    """The original axes that remain axes of the canonical form (all but the batch alone), in order."""
    return [i for i, axis in enumerate(layout) if not (len(axis) == 1 and axis[0].batch)]


def canonical_axis(layout: Layout, axis: int) -> int:
    """Where original axis ``axis`` is in the canonical form."""
    return 1 + kept_axes(layout).index(axis)


def canonical_shape(layout: Layout, batch: int) -> tuple[int, ...]:
    rest = [math.prod(a.size for a in layout[i] if not a.batch) for i in kept_axes(layout)]
    return (batch, *rest)


def signature(layout: Layout) -> tuple:
    """What two layouts must share to have the same canonical form: per axis, the sizes before and after the batch."""
    out = []
    for axis in layout:
        place = next((k for k, a in enumerate(axis) if a.batch), None)
        if place is None:
            out.append((math.prod(a.size for a in axis), None))
        else:
            before = math.prod(a.size for a in axis[:place])
            after = math.prod(a.size for a in axis[place + 1 :])
            out.append((before, after))
    return tuple(out)


def to_canonical(tensor: torch.Tensor, layout: Layout, batch: int) -> torch.Tensor:
    """``tensor`` (of the layout's shape) in canonical form: split into atoms, batch first, regrouped."""
    atoms = [a for axis in layout for a in (axis or (Atom(1),))]
    split = tensor.reshape(tuple(a.size for a in atoms))
    place = next(k for k, a in enumerate(atoms) if a.batch)
    order = [place] + [k for k in range(len(atoms)) if k != place]
    return split.permute(order).reshape(canonical_shape(layout, batch))


def with_batch_first(layout: Layout, batch: int) -> Layout:
    """``layout`` with its batch atom, if lost, put back as the major atom of axis 0 (a batch of one only)."""
    if batch_place(layout) is not None or not layout:
        return layout
    return ((Atom(batch, True), *layout[0]), *layout[1:])


def settle_batch_of_one(layout: Layout) -> Layout:
    """A batch of one, placed where it keeps the canonical form closest to the value: alone in the first size-1 axis
    (then the canonical form is the value itself if that is axis 0), else as the major atom of axis 0."""
    stripped = [tuple(a for a in axis if not a.batch) for axis in layout]
    atom = Atom(1, True)
    empty = next((i for i, axis in enumerate(stripped) if not axis), None)
    if empty is not None:
        stripped[empty] = (atom,)
    elif stripped:
        stripped[0] = (atom, *stripped[0])
    return tuple(stripped)


class Misfit(ValueError):
    """An op that splits the batch atom or moves values across samples."""


def _align(atoms: list[Atom], dims: list[int]) -> list[Axis] | None:
    """Group ``atoms`` (in order) into axes of ``dims``, splitting an atom that straddles two axes (never the
    batch); None if they do not line up."""
    atoms = list(atoms)
    out: list[Axis] = []
    index = 0
    for size in dims:
        axis: list[Atom] = []
        product = 1
        while product < size:
            if index >= len(atoms):
                return None
            atom = atoms[index]
            if size % (product * atom.size) == 0:
                axis.append(atom)
                product *= atom.size
                index += 1
                continue
            need = size // product
            if atom.batch or atom.size % need:
                return None
            axis.append(Atom(need))
            atoms[index] = Atom(atom.size // need)
            product *= need
        out.append(tuple(axis))
    return out if index == len(atoms) else None


def _blocks(old: tuple[int, ...], new: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """The smallest runs of old and new axes (sizes > 1) with equal products."""
    old_axes = [i for i, s in enumerate(old) if s != 1]
    new_axes = [j for j, s in enumerate(new) if s != 1]
    blocks, i, j = [], 0, 0
    while i < len(old_axes) and j < len(new_axes):
        olds, news = [old_axes[i]], [new_axes[j]]
        po, pn = old[old_axes[i]], new[new_axes[j]]
        i, j = i + 1, j + 1
        while po != pn:
            if po < pn:
                olds.append(old_axes[i])
                po *= old[old_axes[i]]
                i += 1
            else:
                news.append(new_axes[j])
                pn *= new[new_axes[j]]
                j += 1
        blocks.append((olds, news))
    return blocks


def reshape_layout(layout: Layout, shape: tuple[int, ...], batch: int) -> Layout:
    """The layout of ``value.reshape(shape)``: the atoms, in order, regrouped into the new axes.

    Runs of axes with equal products are matched; a run that holds the batch must line up with its atoms (an atom
    straddling two new axes is split, the batch atom never), the others may take fresh atoms. A batch of one is
    put back in front afterwards.
    """
    if batch == 1:
        layout = tuple(tuple(a for a in axis if not a.batch) for axis in layout)
    out: list[Axis] = [() for _ in shape]
    for olds, news in _blocks(sizes(layout), shape):
        atoms = [a for i in olds for a in layout[i]]
        grouped = _align(atoms, [shape[j] for j in news])
        if grouped is None:
            if any(a.batch for a in atoms):
                raise Misfit(
                    f"reshape {list(sizes(layout))} -> {list(shape)} splits the batch axis or moves values "
                    "across samples"
                )
            grouped = [fresh(shape[j]) for j in news]
        for j, axis in zip(news, grouped):
            out[j] = axis
    return with_batch_first(tuple(out), batch) if batch == 1 else tuple(out)
