"""Symbolic evaluation of the ops that pick elements by position or accumulate along an axis:
``cat``, ``stack``, splits, advanced indexing (``index.Tensor``), ``embedding`` of a constant
table, ``diff``, ``cumsum``, ``triu`` and ``tril``.

transformers builds its masks with these (``index`` of position tensors by broadcast
``arange``s, ``diff`` and ``cumsum`` to find packed sequences); composed symbolically they
reduce to comparisons of the query and key indices.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import sympy
import torch
from torch import fx

from . import sym_algebra as alg
from .fold_elementwise import broadcast_index
from .fold_registry import FoldValue, NotFoldable, folds
from .folded import Folded
from .node_args import argument
from .term_build import apply, cast, choose, number
from .terms import Index, Sym, Term
from .types import Dim, Shape, is_static, shape_of

if TYPE_CHECKING:
    from .folder import Folder

aten = torch.ops.aten


def _axis(node: fx.Node, position: int, name: str, rank: int, default: int = 0) -> int:
    value = argument(node, position, name, default)
    if not isinstance(value, int):
        raise NotFoldable(f"argument '{name}' is {value!r}, not an axis")
    return value % rank


def _pick(
    condition: sympy.Basic,
    then: Callable[[], Term],
    otherwise: Callable[[], Term],
    dtype: torch.dtype,
) -> Term:
    """A select computing only the branch taken when the condition is known (the other may
    read outside its tensor)."""
    if condition is sympy.true:
        return then()
    if condition is sympy.false:
        return otherwise()
    return choose(Sym(condition, torch.bool), then(), otherwise(), dtype)


def concatenated(pieces: Sequence[Folded], axis: int, shape: Shape, dtype: torch.dtype) -> Folded:
    """``pieces`` joined along ``axis`` (empty pieces skipped)."""
    kept = [p for p in pieces if not (is_static(p.shape[axis]) and p.shape[axis] == 0)]
    offsets: list[Dim] = []
    total: Dim = 0
    for piece in kept:
        offsets.append(total)
        total = total + piece.shape[axis]

    def element(index: Index, first: int = 0) -> Term:
        piece = kept[first]
        local = list(index)
        local[axis] = index[axis] - offsets[first]
        if first == len(kept) - 1:
            return cast(piece.at(local), dtype)
        end = offsets[first] + piece.shape[axis]
        return _pick(
            alg.relation("lt", index[axis], end),
            lambda: cast(piece.at(local), dtype),
            lambda: element(index, first + 1),
            dtype,
        )

    return Folded(shape, dtype, element)


@folds(aten.cat.default, aten.concat.default)
def cat(f: Folder, node: fx.Node) -> Folded:
    pieces = node.args[0]
    if not isinstance(pieces, list | tuple):
        raise NotFoldable(f"cat of {pieces!r}")
    shape = f.shape(node)
    axis = _axis(node, 1, "dim", len(shape))
    return concatenated([f.tensor(p) for p in pieces], axis, shape, f.dtype(node))


@folds(aten.stack.default)
def stack(f: Folder, node: fx.Node) -> Folded:
    pieces = node.args[0]
    if not isinstance(pieces, list | tuple):
        raise NotFoldable(f"stack of {pieces!r}")
    tensors = [f.tensor(p) for p in pieces]
    shape, dtype = f.shape(node), f.dtype(node)
    axis = _axis(node, 1, "dim", len(shape))

    def element(index: Index, k: int = 0) -> Term:
        local = index[:axis] + index[axis + 1 :]
        if k == len(tensors) - 1:
            return cast(tensors[k].at(local), dtype)
        return _pick(
            alg.relation("eq", index[axis], k),
            lambda: cast(tensors[k].at(local), dtype),
            lambda: element(index, k + 1),
            dtype,
        )

    return Folded(shape, dtype, element)


@folds(aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.unbind.int)
def split(f: Folder, node: fx.Node) -> tuple[Folded, ...]:
    source = f.tensor(node.args[0])
    unbind = node.target == aten.unbind.int
    axis = _axis(node, 1 if unbind else 2, "dim", source.rank)
    parts: list[Folded] = []
    offset: Dim = 0
    for meta in node.meta["val"]:
        shape = shape_of(meta)
        if unbind:
            parts.append(_offset_view(source, shape, axis, offset, drop=True))
            offset = offset + 1
        else:
            parts.append(_offset_view(source, shape, axis, offset, drop=False))
            offset = offset + shape[axis]
    return tuple(parts)


def _offset_view(source: Folded, shape: Shape, axis: int, offset: Dim, drop: bool) -> Folded:
    def element(index: Index) -> Term:
        point = list(index)
        if drop:
            point.insert(axis, sympy.Integer(0))
        point[axis] = point[axis] + offset
        return source.at(point)

    return Folded(shape, source.dtype, element)


@folds(operator.getitem)
def getitem(f: Folder, node: fx.Node) -> FoldValue:
    source, position = node.args
    value = f.result.values.get(source) if isinstance(source, fx.Node) else None
    if not isinstance(value, tuple) or not isinstance(position, int):
        raise NotFoldable("getitem of something other than a tuple of tensors")
    return value[position]


def _position(term: Term, size: Dim) -> sympy.Expr:
    """An integer index element as an index into an axis of ``size`` (negative counts from
    the end, as torch reads it)."""
    if not isinstance(term, Sym) or term.dtype == torch.bool:
        raise NotFoldable("indexing by a tensor that is not an integer function of positions")
    value = term.expr
    return alg.ite(alg.relation("lt", value, 0), value + size, value)


@folds(aten.index.Tensor)
def index(f: Folder, node: fx.Node) -> Folded:
    """Advanced indexing: the index tensors broadcast together; their dims replace the
    indexed axes in place when those are adjacent, else lead the result."""
    source = f.tensor(node.args[0])
    entries = node.args[1]
    if not isinstance(entries, list | tuple):
        raise NotFoldable(f"indices {entries!r}")
    tensors = {k: f.tensor(e) for k, e in enumerate(entries) if e is not None}
    positions = sorted(tensors)
    shape, dtype = f.shape(node), f.dtype(node)
    width = len(shape) - (source.rank - len(positions))
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    start = positions[0] if adjacent else 0
    broadcast = shape[start : start + width]

    def element(point: Index) -> Term:
        inner = point[start : start + width]
        rest = iter(point[:start] + point[start + width :])
        source_index: list[sympy.Expr] = []
        for axis in range(source.rank):
            if axis in tensors:
                picked = tensors[axis].at(broadcast_index(inner, tensors[axis].shape, broadcast))
                source_index.append(_position(picked, source.shape[axis]))
            else:
                source_index.append(next(rest))
        return source.at(source_index)

    return Folded(shape, dtype, element)


@folds(aten.embedding.default)
def embedding(f: Folder, node: fx.Node) -> Folded:
    table, ids = f.tensor(node.args[0]), f.tensor(node.args[1])
    shape = f.shape(node)

    def element(point: Index) -> Term:
        row = _position(ids.at(point[:-1]), table.shape[0])
        return table.at((row, point[-1]))

    return Folded(shape, table.dtype, element)


@folds(aten.triu.default, aten.tril.default)
def triangle(f: Folder, node: fx.Node) -> Folded:
    """Keeps column − row ≥ diagonal (triu) or ≤ diagonal (tril) of the last two axes."""
    source = f.tensor(node.args[0])
    diagonal = argument(node, 1, "diagonal", 0)
    if not isinstance(diagonal, int):
        raise NotFoldable(f"diagonal {diagonal!r}")
    kind = "ge" if node.target == aten.triu.default else "le"
    dtype = f.dtype(node)

    def element(point: Index) -> Term:
        kept = alg.relation(kind, point[-1] - point[-2], diagonal)
        return choose(Sym(kept, torch.bool), source.at(point), number(0, dtype), dtype)

    return Folded(f.shape(node), dtype, element)


@folds(aten.diff.default)
def diff(f: Folder, node: fx.Node) -> Folded:
    """y[i + 1] − y[i] along the axis, y the input between ``prepend`` and ``append``."""
    source = f.tensor(node.args[0])
    count = argument(node, 1, "n", 1)
    axis = _axis(node, 2, "dim", source.rank, -1)
    extras = [argument(node, 3, "prepend"), argument(node, 4, "append")]
    if not isinstance(count, int) or count < 1:
        raise NotFoldable(f"diff n={count!r}")
    pieces = [f.tensor(extras[0])] if extras[0] is not None else []
    pieces.append(source)
    if extras[1] is not None:
        pieces.append(f.tensor(extras[1]))
    dtype = source.dtype
    length: Dim = sum((p.shape[axis] for p in pieces), 0)
    joined_shape = tuple(length if a == axis else d for a, d in enumerate(source.shape))
    current = concatenated(pieces, axis, joined_shape, dtype)
    op = aten.logical_xor.default if dtype == torch.bool else aten.sub.Tensor
    for _ in range(count):
        current = _differences(current, axis, op)
    return current


def _differences(source: Folded, axis: int, op: torch._ops.OpOverload) -> Folded:
    shape = tuple(d - 1 if a == axis else d for a, d in enumerate(source.shape))

    def element(point: Index) -> Term:
        following = list(point)
        following[axis] = point[axis] + 1
        rank = source.rank
        return apply(op, [source.at(following), source.at(point)], [rank, rank], {}, source.dtype)

    return Folded(shape, source.dtype, element)


@folds(aten.cumsum.default)
def cumsum(f: Folder, node: fx.Node) -> Folded:
    """Σ_{t ≤ i} x[t] along the axis, in closed form (sympy's summation); integer elements
    only (a float sum along a symbolic axis has no exact closed form)."""
    source = f.tensor(node.args[0])
    axis = _axis(node, 1, "dim", source.rank)
    dtype = f.dtype(node)
    if dtype.is_floating_point:
        raise NotFoldable("a cumulative sum of floats along a dynamic axis")
    step = sympy.Dummy("t", integer=True, nonnegative=True)

    def element(point: Index) -> Term:
        local = list(point)
        local[axis] = step
        summand = cast(source.at(local), dtype)
        if not isinstance(summand, Sym):
            raise NotFoldable("a cumulative sum of values that are not integer expressions")
        total = sympy.summation(summand.expr, (step, 0, point[axis]))
        if total.has(sympy.Sum):
            raise NotFoldable(f"the cumulative sum of {summand.expr} has no closed form")
        return Sym(sympy.expand(total), dtype)

    return Folded(f.shape(node), dtype, element)
