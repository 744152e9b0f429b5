"""Writes folded values (``folded.py``) as high-level IR that computes them from the dynamic
sizes.

A term is written over the axes it depends on only (its core: ``cos`` of positions times
frequencies over [S, d], a mask over [S, T]), then given the value's unit dims and broadcast
to its shape, so each part reads the way the fusion passes expect:

* an integer or boolean ``Sym`` is one no-input ``linalg.generic`` whose body computes it from
  ``linalg.index`` and the sizes (``sym_body.py``): positions are an i64 iota, a mask an i1
  comparison of the query and key indices;
* ``Cast``, ``Apply`` and ``Choose`` are the elementwise ops the translator writes for the
  same torch ops (``ops_elementwise.ELEMENTWISE``), on their operands' values;
* a ``Read`` of a constant table over static axes is the dense constant it reads; over a
  dynamic axis, a generic extracting from the table at the computed (clamped) index.

Writes are remembered by term (its index symbols renamed after the core's axes) and shape, so
equal values are written once: every layer's rotary tables share one positions iota.
"""

from __future__ import annotations

import math

import numpy
import sympy
import torch

from . import layout
from .emitter import Emitter
from .folded import Folded
from .ops_elementwise import ELEMENTWISE, Operand
from .sym_body import ExprWriter
from .term_build import constant_of
from .terms import (
    Apply,
    Cast,
    Choose,
    Number,
    Read,
    Sym,
    Term,
    index_axes,
    index_symbol,
    is_index_symbol,
    substitute,
    symbols_of,
)
from .types import Shape, is_static
from .values import Scalar, TVal

# A table read over static axes is written as the constant it reads up to this many elements.
MAX_MATERIALIZED = 1 << 16


def _polynomial(expr: sympy.Basic) -> bool:
    """Sums and products of sizes and integers (what ``Emitter.index`` writes)."""
    if isinstance(expr, sympy.Integer | sympy.Symbol):
        return True
    return isinstance(expr, sympy.Add | sympy.Mul) and all(_polynomial(a) for a in expr.args)


class TermWriter:
    """Writes folded values and terms through ``em``, remembering what it wrote."""

    def __init__(self, em: Emitter) -> None:
        self.em = em
        self._memo: dict[tuple[Term, Shape], TVal] = {}

    def folded(self, value: Folded) -> TVal:
        """The IR value of a folded tensor."""
        if value.constant is not None:
            return self.em.dense(value.constant)
        term = value.at([index_symbol(a) for a in range(value.rank)])
        return self.term(term, value.shape)

    def scalar(self, value: Folded) -> Scalar | None:
        """A 0-d folded value as the scalar operand torch treats it as, when it is a constant
        or a polynomial in the sizes."""
        if value.rank != 0:
            return None
        term = value.at(())
        constant = constant_of(term)
        if constant is not None:
            return Scalar(constant, value.dtype)
        if isinstance(term, Sym) and not term.dtype == torch.bool and _polynomial(term.expr):
            return Scalar(term.expr, value.dtype)
        return None

    def term(self, term: Term, shape: Shape) -> TVal:
        """A tensor of ``shape`` holding ``term`` at every index (index symbol ``i<a>`` is
        the index along axis a)."""
        key = (term, shape)
        if key in self._memo:
            return self._memo[key]
        constant = constant_of(term)
        if constant is not None:
            result = self.em.splat(constant, shape, term.dtype)
        else:
            axes = index_axes(term)
            core_shape = tuple(shape[a] for a in axes)
            renamed = substitute(
                term, {index_symbol(a): index_symbol(k) for k, a in enumerate(axes)}
            )
            core = self._core(renamed, core_shape)
            with_units = tuple(shape[a] if a in axes else 1 for a in range(len(shape)))
            result = layout.broadcast_to(self.em, layout.reshape(self.em, core, with_units), shape)
        self._memo[key] = result
        return result

    def _core(self, term: Term, shape: Shape) -> TVal:
        """``term``, which depends on every index of ``shape``, as a tensor of ``shape``."""
        key = (term, shape)
        if key in self._memo:
            return self._memo[key]
        em = self.em
        result: TVal
        if isinstance(term, Sym):
            result = self._sym(term, shape)
        elif isinstance(term, Cast):
            result = em.cast(self.term(term.source, shape), term.dtype)
        elif isinstance(term, Apply):
            operands = [
                self._operand(o, r, shape) for o, r in zip(term.operands, term.ranks, strict=True)
            ]
            emit = ELEMENTWISE.get(term.op)
            if emit is None:
                em.unsupported(f"no elementwise form of '{term.op}' for a folded value")
            result = emit(em, operands, dict(term.options), shape, term.dtype)
        elif isinstance(term, Choose):
            result = em.select(
                self.term(term.condition, shape),
                self.term(term.then, shape),
                self.term(term.otherwise, shape),
            )
        elif isinstance(term, Read):
            result = self._read(term, shape)
        elif isinstance(term, Number):
            result = em.splat(term.value, shape, term.dtype)
        else:
            raise TypeError(f"unknown term {term!r}")
        self._memo[key] = result
        return result

    def _operand(self, operand: Term | float | int | bool, rank: int, shape: Shape) -> Operand:
        """An ``Apply`` operand as the elementwise writers take it: a Python scalar, a size
        or a constant 0-d tensor as a Scalar, anything else as a tensor."""
        if not isinstance(operand, Term):
            return Scalar(operand)
        constant = constant_of(operand)
        if rank <= 0 and constant is not None:
            return Scalar(constant, None if rank < 0 else operand.dtype)
        if rank < 0 and isinstance(operand, Sym) and _polynomial(operand.expr):
            return Scalar(operand.expr)
        return self.term(operand, shape)

    def _sym(self, term: Sym, shape: Shape) -> TVal:
        em = self.em
        if not any(is_index_symbol(s) for s in symbols_of(term)) and _polynomial(term.expr):
            return em.splat(term.expr, shape, term.dtype)

        def body(arguments: list[str]) -> str:
            writer = ExprWriter(em, {k: k for k in range(len(shape))})
            try:
                if term.dtype == torch.bool:
                    return writer.boolean(term.expr)
                value = writer.index(term.expr)
            except ValueError as error:
                em.unsupported(f"a value computed from sizes cannot be written: {error}")
            return em.assign(f"arith.index_cast {value} : index to {em.element(term.dtype)}")

        return em.generic(shape, term.dtype, [], body)

    def _read(self, term: Read, shape: Shape) -> TVal:
        table = term.table.tensor
        if all(is_static(d) for d in shape) and math.prod(shape) <= MAX_MATERIALIZED:
            return self.em.dense(_materialized(term, shape))
        em = self.em
        constant = em.dense(table)
        name, type_ = em.value(constant), em.type_of(constant)

        def body(arguments: list[str]) -> str:
            writer = ExprWriter(em, {k: k for k in range(len(shape))})
            points = []
            for entry, size in zip(term.index, table.shape, strict=True):
                value = writer.index(entry)
                # A select computes both its branches: the one not taken may index outside.
                low = em.assign(f"arith.maxsi {value}, {writer.index(sympy.Integer(0))} : index")
                top = writer.index(sympy.Integer(size - 1))
                points.append(em.assign(f"arith.minsi {low}, {top} : index"))
            return em.assign(f"tensor.extract {name}[{', '.join(points)}] : {type_}")

        return em.generic(shape, term.dtype, [], body)


def _materialized(term: Read, shape: Shape) -> torch.Tensor:
    """The elements a table read takes over a static shape, evaluated on the index grid."""
    symbols = [index_symbol(k) for k in range(len(shape))]
    grid = numpy.indices(tuple(int(d) for d in shape)) if shape else numpy.zeros((0,), dtype=int)
    points = []
    table = term.table.tensor
    for entry, size in zip(term.index, table.shape, strict=True):
        function = sympy.lambdify(symbols, entry, modules="numpy")
        values = numpy.broadcast_to(numpy.asarray(function(*grid), dtype=numpy.int64), tuple(shape))
        points.append(torch.from_numpy(numpy.clip(values, 0, size - 1).copy()))
    return table[tuple(points)].reshape(tuple(int(d) for d in shape))
