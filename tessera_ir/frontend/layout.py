"""Reshapes, broadcasts and transposes in the forms docs/high-level-ir.md names.

A reshape is a ``tensor.collapse_shape`` and/or ``tensor.expand_shape`` whose groups pair runs
of source and target dims with equal products (symbolic products compare with sympy). A
broadcast drops the source's broadcast unit dims with ``collapse_shape`` first, then
``linalg.broadcast`` adds the missing dims.
"""

from __future__ import annotations

from typing import NoReturn, Protocol

import sympy
import torch

from .types import Dim, Shape, is_static, product, same_dim, same_shape
from .values import TVal


class Writer(Protocol):
    """What the layout functions need of the emitter (``emitter.Emitter``, which calls them:
    a protocol keeps the dependency one way)."""

    def value(self, value: TVal) -> str: ...
    def type(self, shape: Shape, dtype: torch.dtype) -> str: ...
    def type_of(self, value: TVal) -> str: ...
    def assign(self, text: str, hint: str = "v") -> str: ...
    def mixed_sizes(self, shape: Shape) -> str: ...
    def empty(self, shape: Shape, dtype: torch.dtype) -> TVal: ...
    def unsupported(self, detail: str) -> NoReturn: ...


def _is_unit(dim: Dim) -> bool:
    return is_static(dim) and dim == 1


def _divides(small: Dim, large: Dim) -> bool:
    """True when ``large / small`` is a whole number or a polynomial (no denominator)."""
    ratio = sympy.cancel(sympy.sympify(large) / sympy.sympify(small))
    return ratio.as_numer_denom()[1] == 1


def group_dims(source: Shape, target: Shape) -> tuple[list[list[int]], list[list[int]]] | None:
    """Aligned groups of source and target axes with equal products, unit dims joined to the
    group before them (or the first group); None when the shapes cannot be paired."""
    src = [i for i, d in enumerate(source) if not _is_unit(d)]
    dst = [j for j, d in enumerate(target) if not _is_unit(d)]
    src_groups: list[list[int]] = []
    dst_groups: list[list[int]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        gs, gd = [src[i]], [dst[j]]
        ps, pd = source[src[i]], target[dst[j]]
        i, j = i + 1, j + 1
        while not same_dim(ps, pd):
            if _divides(pd, ps):
                if j == len(dst):
                    return None
                gd.append(dst[j])
                pd = pd * target[dst[j]]
                j += 1
            else:
                if i == len(src):
                    return None
                gs.append(src[i])
                ps = ps * source[src[i]]
                i += 1
        src_groups.append(gs)
        dst_groups.append(gd)
    if i != len(src) or j != len(dst):
        return None
    if not src_groups:
        # Only unit dims on both sides: one group each (none for a rank-0 side).
        return (
            [list(range(len(source)))] if source else [],
            [list(range(len(target)))] if target else [],
        )
    return _with_units(src_groups, len(source)), _with_units(dst_groups, len(target))


def _with_units(groups: list[list[int]], rank: int) -> list[list[int]]:
    owner = {axis: g for g, members in enumerate(groups) for axis in members}
    current = 0
    result: list[list[int]] = [[] for _ in groups]
    for axis in range(rank):
        current = owner.get(axis, current)
        result[current].append(axis)
    return result


def _groups_text(groups: list[list[int]]) -> str:
    return "[" + ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups) + "]"


def _collapse(em: Writer, x: TVal, groups: list[list[int]], shape: Shape) -> TVal:
    text = (
        f"tensor.collapse_shape {em.value(x)} {_groups_text(groups)} : {em.type_of(x)} "
        f"into {em.type(shape, x.dtype)}"
    )
    return TVal(em.assign(text), shape, x.dtype)


def _expand(em: Writer, x: TVal, groups: list[list[int]], shape: Shape) -> TVal:
    text = (
        f"tensor.expand_shape {em.value(x)} {_groups_text(groups)} output_shape "
        f"[{em.mixed_sizes(shape)}] : {em.type_of(x)} into {em.type(shape, x.dtype)}"
    )
    return TVal(em.assign(text), shape, x.dtype)


def _non_unit(shape: Shape) -> Shape:
    return tuple(d for d in shape if not _is_unit(d))


def _unit_groups(small: Shape, large: Shape) -> list[list[int]] | None:
    """Groups of ``large``'s axes, one per axis of ``small``, when ``large`` is ``small`` with
    unit dims inserted (matched in order; extra units join the group before them)."""
    starts: list[int] = []
    position = 0
    for dim in small:
        while position < len(large) and not same_dim(large[position], dim):
            position += 1
        if position == len(large):
            return None
        starts.append(position)
        position += 1
    if not small:
        return []
    starts[0] = 0
    ends = [*starts[1:], len(large)]
    return [list(range(a, b)) for a, b in zip(starts, ends, strict=True)]


def reshape(em: Writer, x: TVal, shape: Shape) -> TVal:
    """``x`` viewed with ``shape`` (same element count, row-major order).

    A reshape that only inserts or removes unit dims gives a value that is written (as an
    ``expand_shape``/``collapse_shape`` of its unit-free source) where it is used, so that
    a broadcast reading it starts from the source and leaves no dead reshape behind."""
    if x.unit_source is not None:
        x = x.unit_source
    if same_shape(x.shape, shape):
        return x
    if same_shape(_non_unit(x.shape), _non_unit(shape)):
        return TVal(None, shape, x.dtype, unit_source=x)
    return reshape_now(em, x, shape)


def reshape_now(em: Writer, x: TVal, shape: Shape) -> TVal:
    """Writes the reshape of ``x`` to ``shape``: one expand or collapse where possible."""
    if len(shape) > len(x.shape) and same_shape(_non_unit(x.shape), _non_unit(shape)):
        groups = _unit_groups(x.shape, shape)
        if groups is not None:
            return _expand(em, x, groups, shape)
    if len(shape) < len(x.shape) and same_shape(_non_unit(x.shape), _non_unit(shape)):
        groups = _unit_groups(shape, x.shape)
        if groups is not None:
            return _collapse(em, x, groups, shape)
    paired = group_dims(x.shape, shape)
    if paired is None:
        em.unsupported(f"cannot reshape {list(x.shape)} to {list(shape)}")
    src_groups, dst_groups = paired
    if not x.shape:
        return _expand(em, x, [], shape)
    if not shape:
        return _collapse(em, x, [], shape)
    if all(len(g) == 1 for g in src_groups):
        return _expand(em, x, dst_groups, shape)
    if all(len(g) == 1 for g in dst_groups):
        return _collapse(em, x, src_groups, shape)
    middle = tuple(product(tuple(x.shape[i] for i in g)) for g in src_groups)
    return _expand(em, _collapse(em, x, src_groups, middle), dst_groups, shape)


def broadcast_to(em: Writer, x: TVal, shape: Shape) -> TVal:
    """``x`` broadcast to ``shape`` by torch's rules (align right, stretch unit dims)."""
    offset = len(shape) - len(x.shape)
    if offset < 0:
        em.unsupported(f"cannot broadcast {list(x.shape)} to {list(shape)}")
    kept_src: list[int] = []
    kept_dst: list[int] = []
    for i, dim in enumerate(x.shape):
        if same_dim(dim, shape[i + offset]):
            kept_src.append(i)
            kept_dst.append(i + offset)
        elif not _is_unit(dim):
            em.unsupported(f"cannot broadcast {list(x.shape)} to {list(shape)}")
    if offset == 0 and len(kept_src) == len(x.shape):
        return x
    source = reshape(em, x, tuple(x.shape[i] for i in kept_src))
    added = [j for j in range(len(shape)) if j not in kept_dst]
    init = em.empty(shape, x.dtype)
    text = (
        f"linalg.broadcast ins({em.value(source)} : {em.type_of(source)}) "
        f"outs({init.name} : {em.type(shape, x.dtype)}) dimensions = [{', '.join(map(str, added))}]"
    )
    return TVal(em.assign(text), shape, x.dtype)


def transpose(em: Writer, x: TVal, permutation: list[int]) -> TVal:
    """``linalg.transpose``: result dim i is ``x``'s dim ``permutation[i]``."""
    if permutation == list(range(len(permutation))):
        return x
    shape = tuple(x.shape[p] for p in permutation)
    init = em.empty(shape, x.dtype)
    text = (
        f"linalg.transpose ins({em.value(x)} : {em.type_of(x)}) outs({init.name} : "
        f"{em.type(shape, x.dtype)}) permutation = [{', '.join(map(str, permutation))}]"
    )
    return TVal(em.assign(text), shape, x.dtype)
