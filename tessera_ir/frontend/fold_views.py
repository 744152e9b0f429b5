"""Symbolic evaluation of the ops that move elements without computing: reshapes, broadcasts,
transposes, slices, repeats, flips, and the ops that change nothing at inference time.

Each maps the result's index to the source's. A reshape pairs runs of source and result axes
with equal products (``layout.group_dims``) and converts a position within a run between the
two mixed-radix forms; knowing each index's range, it writes ``(4·a + b) // 4`` as ``a`` and
``(4·a + b) % 4`` as ``b`` rather than leaving the division to run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import sympy
import torch
from torch import fx

from . import layout
from .fold_elementwise import broadcast_index
from .fold_registry import NotFoldable, folds
from .folded import Folded
from .node_args import argument
from .terms import Index
from .types import Dim, Shape, is_static

if TYPE_CHECKING:
    from .folder import Folder

aten = torch.ops.aten

# One term of a position within a run of axes: index · stride, the index below ``bound`` (the
# axis' size, a number or a size expression).
_Part = tuple[sympy.Expr, sympy.Expr, Dim]


def _view(source: Folded, shape: Shape, mapping: Callable[[Index], Sequence[sympy.Expr]]) -> Folded:
    """``source`` read through ``mapping`` from the result's index to the source's."""
    return Folded(shape, source.dtype, lambda index: source.at(tuple(mapping(index))))


def _exact(numerator: Dim | sympy.Expr, denominator: Dim | sympy.Expr) -> sympy.Expr | None:
    """numerator / denominator when that is a whole number or polynomial, else None."""
    ratio = sympy.cancel(sympy.sympify(numerator) / sympy.sympify(denominator))
    return ratio if ratio.as_numer_denom()[1] == 1 else None


def _below(parts: list[_Part], limit: Dim | sympy.Expr) -> bool:
    """Σ index·stride < limit for every index in range (sizes are positive)."""
    largest = sum(((bound - 1) * stride for _, stride, bound in parts), sympy.Integer(0))
    return bool(sympy.expand(sympy.sympify(limit) - largest).is_positive)


def _digit(parts: list[_Part], inner: sympy.Expr, size: Dim, outermost: bool) -> sympy.Expr:
    """floor(position / inner) mod size, for position = Σ index·stride."""
    whole: list[_Part] = []
    rest: list[_Part] = []
    for entry, stride, bound in parts:
        ratio = _exact(stride, inner)
        if ratio is not None:
            whole.append((entry, ratio, bound))
        else:
            rest.append((entry, stride, bound))
    position = sum((e * s for e, s, _ in parts), sympy.Integer(0))
    if rest and not _below(rest, inner):
        quotient = sympy.floor(position / inner)
        return quotient if outermost else sympy.Mod(quotient, size)
    if outermost:
        return sympy.expand(sum((e * s for e, s, _ in whole), sympy.Integer(0)))
    kept = [(e, s, b) for e, s, b in whole if _exact(s, size) is None]
    value = sympy.expand(sum((e * s for e, s, _ in kept), sympy.Integer(0)))
    if _below(kept, size):
        return value
    return sympy.Mod(value, size)


def reshape_index(index: Index, source: Shape, target: Shape) -> list[sympy.Expr]:
    """The source index of a row-major reshape of ``source`` to ``target``."""
    paired = layout.group_dims(source, target)
    if paired is None:
        raise NotFoldable(f"cannot reshape {list(source)} to {list(target)}")
    point: list[sympy.Expr] = [sympy.Integer(0)] * len(source)
    for source_axes, target_axes in zip(*paired, strict=True):
        parts: list[_Part] = []
        stride: sympy.Expr = sympy.Integer(1)
        for axis in reversed(target_axes):
            dim = target[axis]
            parts.append((index[axis], stride, dim))
            stride = stride * dim
        inner: sympy.Expr = sympy.Integer(1)
        for position, axis in enumerate(reversed(source_axes)):
            outermost = position == len(source_axes) - 1
            point[axis] = _digit(parts, inner, source[axis], outermost)
            inner = inner * source[axis]
    return point


@folds(
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.view_copy.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
)
def reshape(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    shape = f.shape(node)
    return _view(source, shape, lambda index: reshape_index(index, source.shape, shape))


@folds(aten.expand.default, aten.expand_as.default, aten.broadcast_to.default)
def expand(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    shape = f.shape(node)
    return _view(source, shape, lambda index: broadcast_index(index, source.shape, shape))


def _permuted(source: Folded, shape: Shape, permutation: list[int]) -> Folded:
    def mapping(index: Index) -> list[sympy.Expr]:
        point: list[sympy.Expr] = [sympy.Integer(0)] * len(index)
        for position, axis in enumerate(permutation):
            point[axis] = index[position]
        return point

    return _view(source, shape, mapping)


@folds(aten.permute.default)
def permute(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    dims = argument(node, 1, "dims")
    if not isinstance(dims, list | tuple) or not all(isinstance(d, int) for d in dims):
        raise NotFoldable(f"permutation {dims!r}")
    return _permuted(source, f.shape(node), [int(d) % source.rank for d in dims])


@folds(aten.transpose.int, aten.t.default, aten.numpy_T.default)
def transpose(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    permutation = list(range(source.rank))
    if node.target == aten.transpose.int:
        a, b = _dim(node, 1, "dim0", source.rank), _dim(node, 2, "dim1", source.rank)
        permutation[a], permutation[b] = b, a
    else:
        permutation.reverse()
    return _permuted(source, f.shape(node), permutation)


def _dim(node: fx.Node, position: int, name: str, rank: int, default: int | None = None) -> int:
    """An axis argument, made nonnegative."""
    value = argument(node, position, name, default)
    if not isinstance(value, int):
        raise NotFoldable(f"argument '{name}' is {value!r}, not an axis")
    return value % rank


def _start(value: object, size: Dim) -> sympy.Expr:
    """A slice start as torch reads it: None is 0, a negative one counts from the end."""
    if value is None:
        return sympy.Integer(0)
    start = sympy.sympify(value)
    if not start.is_integer:
        raise NotFoldable(f"slice start {value}")
    if start.is_negative:
        return sympy.Max(start + size, 0)
    if is_static(size) and start.is_Integer and start > size:
        return sympy.Integer(size)
    return start


@folds(aten.slice.Tensor, aten.narrow.default)
def slice_(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    dim = _dim(node, 1, "dim", source.rank, 0)
    start_arg = argument(node, 2, "start")
    start = _start(f.scalar(start_arg) if start_arg is not None else None, source.shape[dim])
    step = 1 if node.target == aten.narrow.default else argument(node, 4, "step", 1)
    if not isinstance(step, int):
        raise NotFoldable(f"slice step {step!r}")

    def mapping(index: Index) -> list[sympy.Expr]:
        point = list(index)
        point[dim] = start + step * index[dim]
        return point

    return _view(source, f.shape(node), mapping)


@folds(aten.select.int)
def select(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    dim = _dim(node, 1, "dim", source.rank)
    position = sympy.sympify(f.scalar(argument(node, 2, "index")))
    if position.is_negative:
        position = position + source.shape[dim]
    return _view(source, f.shape(node), lambda index: [*index[:dim], position, *index[dim:]])


@folds(aten.repeat_interleave.self_int)
def repeat_interleave(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    repeats = f.scalar(argument(node, 1, "repeats"))
    if argument(node, 2, "dim") is None or not isinstance(repeats, int):
        raise NotFoldable("repeat_interleave without a dim or with tensor repeats")
    axis = _dim(node, 2, "dim", source.rank)

    def mapping(index: Index) -> list[sympy.Expr]:
        point = list(index)
        point[axis] = sympy.floor(index[axis] / repeats)
        return point

    return _view(source, f.shape(node), mapping)


@folds(aten.repeat.default)
def repeat(f: Folder, node: fx.Node) -> Folded:
    """Tiling: each source axis is read modulo its size."""
    source = f.tensor(node.args[0])
    shape = f.shape(node)
    offset = len(shape) - source.rank

    def mapping(index: Index) -> list[sympy.Expr]:
        return [
            index[offset + axis]
            if shape[offset + axis] == dim
            else sympy.Mod(index[offset + axis], dim)
            for axis, dim in enumerate(source.shape)
        ]

    return _view(source, shape, mapping)


@folds(aten.flip.default)
def flip(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    dims = argument(node, 1, "dims")
    if not isinstance(dims, list | tuple):
        raise NotFoldable(f"flip dims {dims!r}")
    flipped = {int(d) % source.rank for d in dims}

    def mapping(index: Index) -> list[sympy.Expr]:
        return [
            source.shape[axis] - 1 - entry if axis in flipped else entry
            for axis, entry in enumerate(index)
        ]

    return _view(source, f.shape(node), mapping)


@folds(
    aten.alias.default,
    aten.contiguous.default,
    aten.clone.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
)
def identity(f: Folder, node: fx.Node) -> Folded:
    return f.tensor(node.args[0])


@folds(aten.dropout.default)
def dropout(f: Folder, node: fx.Node) -> Folded:
    if argument(node, 2, "train", False) and argument(node, 1, "p", 0.0):
        raise NotFoldable("dropout in training mode")
    return f.tensor(node.args[0])
