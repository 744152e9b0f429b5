"""Symbolic evaluation of the ops that create tensors: ``arange``, fills of a (possibly
symbolic) shape, the ``*_like`` and ``new_*`` families (which read only their argument's
shape), and the assertions torch.export records about sizes and metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy
import torch
from torch import fx

from .fold_registry import FoldScalar, NotFoldable, folds
from .folded import Folded
from .node_args import argument
from .term_build import apply, cast, number
from .terms import Cast, Index, Sym, Term

if TYPE_CHECKING:
    from .folder import Folder

aten = torch.ops.aten


def _integer(value: FoldScalar) -> sympy.Expr | None:
    """``value`` as a sympy integer when it is an int or an integer size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, sympy.Expr) and value.is_integer:
        return value
    return None


@folds(aten.arange.default, aten.arange.start, aten.arange.start_step)
def arange(f: Folder, node: fx.Node) -> Folded:
    """``start + step·i``: an integer term, converted for a float arange (torch computes it in
    double precision, which is exact for integer start and step)."""
    if node.target == aten.arange.default:
        start, step = f.scalar(0), f.scalar(1)
    else:
        start = f.scalar(node.args[0])
        step = f.scalar(argument(node, 2, "step", 1))
    shape, dtype = f.shape(node), f.dtype(node)
    first, stride = _integer(start), _integer(step)

    def element(index: Index) -> Term:
        (i,) = index
        if first is not None and stride is not None:
            integer = Sym(sympy.expand(first + stride * i), torch.int64)
            return cast(integer, dtype) if dtype.is_floating_point else Sym(integer.expr, dtype)
        if not dtype.is_floating_point:
            raise NotFoldable(f"an integer arange from {start} by {step}")
        if not isinstance(start, float | int) or not isinstance(step, float | int):
            raise NotFoldable(f"an arange from {start} by {step}")
        position = Cast(Sym(i, torch.int64), torch.float64)
        offset = apply(aten.mul.Tensor, [position, step], [0, -1], {}, torch.float64)
        value = apply(aten.add.Tensor, [offset, start], [0, -1], {}, torch.float64)
        return cast(value, dtype)

    return Folded(shape, dtype, element)


def _filled(f: Folder, node: fx.Node, value: FoldScalar) -> Folded:
    shape, dtype = f.shape(node), f.dtype(node)
    if isinstance(value, bool | int | float):
        term = number(value, dtype)
    else:
        size = _integer(value)
        if size is None:
            raise NotFoldable(f"a fill with {value}")
        term = cast(Sym(size, torch.int64), dtype)
    return Folded(shape, dtype, lambda index: term)


@folds(aten.full.default, aten.new_full.default)
def full(f: Folder, node: fx.Node) -> Folded:
    position = 2 if node.target == aten.new_full.default else 1
    return _filled(f, node, f.scalar(argument(node, position, "fill_value")))


@folds(aten.full_like.default)
def full_like(f: Folder, node: fx.Node) -> Folded:
    return _filled(f, node, f.scalar(argument(node, 1, "fill_value")))


@folds(aten.scalar_tensor.default)
def scalar_tensor(f: Folder, node: fx.Node) -> Folded:
    return _filled(f, node, f.scalar(argument(node, 0, "s")))


@folds(aten.zeros.default, aten.new_zeros.default, aten.zeros_like.default)
def zeros(f: Folder, node: fx.Node) -> Folded:
    return _filled(f, node, 0)


@folds(aten.ones.default, aten.new_ones.default, aten.ones_like.default)
def ones(f: Folder, node: fx.Node) -> Folded:
    return _filled(f, node, 1)


@folds(aten.empty.memory_format, aten.new_empty.default, aten.empty_like.default)
def empty(f: Folder, node: fx.Node) -> Folded:
    """Uninitialised memory may hold anything; zeros is one of the things it may hold."""
    return _filled(f, node, 0)


@folds(
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten._assert_async.msg,
)
def assertion(f: Folder, node: fx.Node) -> None:
    return None
