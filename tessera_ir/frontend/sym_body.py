"""Writes sympy integer and boolean expressions as ops in a ``linalg.generic`` body.

Index symbols read ``linalg.index`` of their loop, sizes the function's ``tensor.dim`` values
(hoisted, so they are visible in every body), integer constants hoisted ``arith.constant``s.
Arithmetic is on ``index`` values; a comparison is written between the positive and the
negative terms of its canonical ``e <op> 0`` form, so ``k - q <= 0`` reads ``cmpi sle, k, q``.
Floor division and the remainder take Python's signs, as sympy's ``floor`` and ``Mod`` do;
divisors are positive (constants or sizes).
"""

from __future__ import annotations

import sympy

from .emitter import Emitter
from .terms import axis_of, is_index_symbol

_PREDICATES = {
    sympy.Eq: "eq",
    sympy.Ne: "ne",
    sympy.Lt: "slt",
    sympy.Le: "sle",
    sympy.Gt: "sgt",
    sympy.Ge: "sge",
}


class ExprWriter:
    """Writes expressions inside one generic body; ``loops`` maps an index symbol's axis to
    the generic's loop dimension that iterates it."""

    def __init__(self, em: Emitter, loops: dict[int, int]) -> None:
        self.em = em
        self.loops = loops
        self._memo: dict[sympy.Basic, str] = {}

    def _constant(self, value: int) -> str:
        return self.em.hoist(f"arith.constant {value} : index")

    def index(self, expr: sympy.Basic) -> str:
        """An ``index`` value holding the integer ``expr``."""
        expr = sympy.sympify(expr)
        if expr in self._memo:
            return self._memo[expr]
        found = self._index(expr)
        self._memo[expr] = found
        return found

    def _index(self, expr: sympy.Expr) -> str:
        em = self.em
        if isinstance(expr, sympy.Integer):
            return self._constant(int(expr))
        if is_index_symbol(expr):
            axis = axis_of(expr)
            if axis not in self.loops:
                raise ValueError(f"index {expr} has no loop in this body")
            return em.assign(f"linalg.index {self.loops[axis]} : index")
        if isinstance(expr, sympy.Symbol):
            return em.index(expr)
        if isinstance(expr, sympy.Add):
            return self._sum(expr)
        if isinstance(expr, sympy.Mul):
            coefficient, rest = expr.as_coeff_Mul()
            if not coefficient.is_Integer:
                raise ValueError(f"{expr} is not an integer expression")
            factors = [self.index(f) for f in sympy.Mul.make_args(rest)]
            if coefficient != 1:
                factors.insert(0, self._constant(int(coefficient)))
            return self._chain("arith.muli", factors)
        if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and expr.exp > 0:
            return self._chain("arith.muli", [self.index(expr.base)] * int(expr.exp))
        if isinstance(expr, sympy.floor | sympy.ceiling):
            numerator, denominator = sympy.fraction(sympy.together(expr.args[0]))
            if not denominator.is_positive:
                raise ValueError(f"{expr} does not divide by a positive value")
            op = "arith.floordivsi" if isinstance(expr, sympy.floor) else "arith.ceildivsi"
            return em.assign(f"{op} {self.index(numerator)}, {self.index(denominator)} : index")
        if isinstance(expr, sympy.Mod):
            return self._modulo(expr.args[0], expr.args[1])
        if isinstance(expr, sympy.Max | sympy.Min):
            op = "arith.maxsi" if isinstance(expr, sympy.Max) else "arith.minsi"
            return self._chain(op, [self.index(a) for a in expr.args])
        if isinstance(expr, sympy.Abs):
            value = self.index(expr.args[0])
            negated = em.assign(f"arith.subi {self._constant(0)}, {value} : index")
            return em.assign(f"arith.maxsi {value}, {negated} : index")
        if isinstance(expr, sympy.Piecewise):
            return self._piecewise(expr, self.index, "index")
        raise ValueError(f"cannot write {expr} ({type(expr).__name__}) as index arithmetic")

    def _sum(self, expr: sympy.Add) -> str:
        """Positive terms added, then negative ones subtracted."""
        positive, negative = _split(expr)
        total = self._chain("arith.addi", [self.index(t) for t in positive]) if positive else None
        for term in negative:
            total = self.em.assign(
                f"arith.subi {total or self._constant(0)}, {self.index(term)} : index"
            )
        assert total is not None
        return total

    def _chain(self, op: str, values: list[str]) -> str:
        result = values[0]
        for value in values[1:]:
            result = self.em.assign(f"{op} {result}, {value} : index")
        return result

    def _modulo(self, value: sympy.Expr, divisor: sympy.Expr) -> str:
        if not divisor.is_positive:
            raise ValueError(f"{value} mod {divisor} does not divide by a positive value")
        em = self.em
        size = self.index(divisor)
        remainder = em.assign(f"arith.remsi {self.index(value)}, {size} : index")
        if value.is_nonnegative:
            return remainder
        # remsi takes the dividend's sign; Python's remainder takes the divisor's.
        negative = em.assign(f"arith.cmpi slt, {remainder}, {self._constant(0)} : index")
        wrapped = em.assign(f"arith.addi {remainder}, {size} : index")
        return em.assign(f"arith.select {negative}, {wrapped}, {remainder} : index")

    def _piecewise(self, expr: sympy.Piecewise, write: object, type_: str) -> str:
        assert callable(write)
        pieces = list(expr.args)
        result: str = write(pieces[-1][0])
        for value, condition in reversed(pieces[:-1]):
            chosen = write(value)
            flag = self.boolean(condition)
            result = self.em.assign(f"arith.select {flag}, {chosen}, {result} : {type_}")
        return result

    def boolean(self, expr: sympy.Basic) -> str:
        """An ``i1`` value holding the boolean ``expr``."""
        if expr in self._memo:
            return self._memo[expr]
        found = self._boolean(expr)
        self._memo[expr] = found
        return found

    def _boolean(self, expr: sympy.Basic) -> str:
        em = self.em
        if expr is sympy.true or expr is sympy.false:
            return em.hoist(f"arith.constant {'true' if expr is sympy.true else 'false'}")
        predicate = _PREDICATES.get(type(expr))
        if predicate is not None:
            left, right = _sides(expr.lhs - expr.rhs)
            return em.assign(
                f"arith.cmpi {predicate}, {self.index(left)}, {self.index(right)} : index"
            )
        if isinstance(expr, sympy.And | sympy.Or | sympy.Xor):
            op = {sympy.And: "arith.andi", sympy.Or: "arith.ori", sympy.Xor: "arith.xori"}[
                type(expr)
            ]
            values = [self.boolean(a) for a in expr.args]
            result = values[0]
            for value in values[1:]:
                result = em.assign(f"{op} {result}, {value} : i1")
            return result
        if isinstance(expr, sympy.Not):
            true = em.hoist("arith.constant true")
            return em.assign(f"arith.xori {self.boolean(expr.args[0])}, {true} : i1")
        if isinstance(expr, sympy.ITE):
            condition, then, otherwise = expr.args
            return em.assign(
                f"arith.select {self.boolean(condition)}, {self.boolean(then)}, "
                f"{self.boolean(otherwise)} : i1"
            )
        if isinstance(expr, sympy.Piecewise):
            return self._piecewise(expr, self.boolean, "i1")
        raise ValueError(f"cannot write {expr} ({type(expr).__name__}) as a boolean")


def _split(expr: sympy.Expr) -> tuple[list[sympy.Expr], list[sympy.Expr]]:
    """The terms of a sum with a positive coefficient, and the others negated."""
    positive: list[sympy.Expr] = []
    negative: list[sympy.Expr] = []
    for term in sympy.Add.make_args(expr):
        coefficient, _ = term.as_coeff_Mul()
        (negative if coefficient < 0 else positive).append(-term if coefficient < 0 else term)
    return positive, negative


def _sides(difference: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """(P, N) with P − N = ``difference``, both free of negative terms (a constant goes to
    the side where it is positive)."""
    positive, negative = _split(sympy.expand(difference))
    return sympy.Add(*positive), sympy.Add(*negative)
