"""Symbolic evaluation of elementwise ops: arithmetic, math functions, comparisons, logic,
casts, ``where`` and ``masked_fill``.

An elementwise result's element at an index is the op applied to each operand's element at
the broadcast index (``term_build.apply`` folds and simplifies it). Sizes used as operands
(``arange(S) + S``) are integer ``Sym`` terms standing as Python scalars do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy
import torch
from torch import fx

from .fold_registry import FoldScalar, NotFoldable, folds
from .folded import Folded
from .node_args import split_arguments
from .ops_elementwise import ELEMENTWISE
from .term_build import apply, cast, choose, number
from .terms import Index, Scalar, Sym, Term
from .types import Shape, is_static

if TYPE_CHECKING:
    from .folder import Folder

aten = torch.ops.aten

_CASTS = (
    aten.to.dtype,
    aten.to.dtype_layout,
    aten.to.device,
    aten._to_copy.default,
    aten.type_as.default,
    aten.to.other,
)
_SELECTS = (
    aten.where.self,
    aten.where.ScalarOther,
    aten.where.ScalarSelf,
    aten.where.Scalar,
    aten.masked_fill.Scalar,
    aten.masked_fill.Tensor,
)


def broadcast_index(index: Index, source: Shape, result: Shape) -> Index:
    """The index into a ``source``-shaped operand of a ``result``-shaped broadcast: aligned
    to the right, unit dims stretched (read at 0)."""
    offset = len(result) - len(source)
    return tuple(
        sympy.Integer(0) if is_static(dim) and dim == 1 else index[offset + axis]
        for axis, dim in enumerate(source)
    )


def element_of(operand: Folded | FoldScalar, index: Index, result: Shape) -> Term | Scalar:
    """An operand's element at the result's ``index``: a term for a tensor or a size, the
    number itself for a Python number."""
    if isinstance(operand, Folded):
        return operand.at(broadcast_index(index, operand.shape, result))
    if isinstance(operand, bool | int | float):
        return operand
    if isinstance(operand, sympy.Expr) and operand.is_integer:
        return Sym(operand, torch.int64)
    raise NotFoldable(f"operand {operand} is not an integer size")


def _rank(operand: Folded | FoldScalar) -> int:
    return operand.rank if isinstance(operand, Folded) else -1


def _elementwise(f: Folder, node: fx.Node) -> Folded:
    arguments, options = split_arguments(node)
    operands = [f.operand(a) for a in arguments]
    ranks = [_rank(o) for o in operands]
    shape, dtype = f.shape(node), f.dtype(node)
    op = node.target
    assert isinstance(op, torch._ops.OpOverload), "elementwise ops are aten overloads"

    def element(index: Index) -> Term:
        terms = [element_of(o, index, shape) for o in operands]
        return apply(op, terms, ranks, options, dtype)

    return Folded(shape, dtype, element)


for _op in ELEMENTWISE:
    if _op not in _CASTS and _op not in _SELECTS:
        folds(_op)(_elementwise)


def as_term(value: Term | Scalar, dtype: torch.dtype) -> Term:
    """A term of ``dtype``: a term converted, or a number as that dtype."""
    if isinstance(value, Term):
        return cast(value, dtype)
    return number(value, dtype)


@folds(*_CASTS)
def to(f: Folder, node: fx.Node) -> Folded:
    source = f.tensor(node.args[0])
    shape, dtype = f.shape(node), f.dtype(node)
    return Folded(shape, dtype, lambda index: cast(source.at(index), dtype))


@folds(*_SELECTS)
def where(f: Folder, node: fx.Node) -> Folded:
    arguments, _ = split_arguments(node)
    operands = [f.operand(a) for a in arguments]
    if node.target in (aten.masked_fill.Scalar, aten.masked_fill.Tensor):
        kept, mask, value = operands
        operands = [mask, value, kept]
    shape, dtype = f.shape(node), f.dtype(node)
    condition, then, otherwise = operands

    def element(index: Index) -> Term:
        flag = as_term(element_of(condition, index, shape), torch.bool)
        return choose(
            flag,
            as_term(element_of(then, index, shape), dtype),
            as_term(element_of(otherwise, index, shape), dtype),
            dtype,
        )

    return Folded(shape, dtype, element)
