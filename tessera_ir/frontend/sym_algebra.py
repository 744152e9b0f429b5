"""Integer and boolean algebra on sympy expressions, in the forms ``Sym`` terms keep.

Relations are kept as ``expand(a - b) <op> 0`` with integer coefficients, so that sympy
decides them whenever the assumptions on the symbols allow (indices are nonnegative, sizes
positive): ``i0 + 1 > 0`` is true, and ``k > (k + d) - 6`` reads ``6 - d > 0``. Selects are
``Piecewise`` for integers and and/or/not for booleans; ``tidy`` folds arithmetic into the
branches of a select and resolves a branch whose condition pins an index to one value (the
first row of a ``diff``, say), so that selects which only look different collapse.
"""

from __future__ import annotations

import math

import sympy

_RELATIONS = {
    "eq": sympy.Eq,
    "ne": sympy.Ne,
    "lt": sympy.Lt,
    "le": sympy.Le,
    "gt": sympy.Gt,
    "ge": sympy.Ge,
}


def relation(kind: str, a: sympy.Expr, b: sympy.Expr) -> sympy.Basic:
    """``a <kind> b`` (kind one of eq, ne, lt, le, gt, ge) in the canonical form."""
    difference = sympy.expand(sympy.sympify(a) - sympy.sympify(b))
    if difference.has(sympy.Piecewise):
        folded = sympy.piecewise_fold(_RELATIONS[kind](difference, 0, evaluate=False))
        return tidy(folded)
    denominators = [
        sympy.fraction(c)[1] for c in difference.as_coefficients_dict().values() if c.is_Rational
    ]
    scale = math.lcm(*[int(d) for d in denominators if d.is_Integer]) if denominators else 1
    if scale > 1:
        difference = sympy.expand(difference * scale)
    return _RELATIONS[kind](difference, 0)


def as_integer(condition: sympy.Basic) -> sympy.Expr:
    """1 where ``condition`` holds, else 0 (a bool converted to an integer)."""
    if condition is sympy.true:
        return sympy.Integer(1)
    if condition is sympy.false:
        return sympy.Integer(0)
    return sympy.Piecewise((sympy.Integer(1), condition), (sympy.Integer(0), True))


def as_boolean(value: sympy.Expr) -> sympy.Basic:
    """``value != 0`` (an integer converted to a bool)."""
    return relation("ne", value, sympy.Integer(0))


def is_boolean(expr: sympy.Basic) -> bool:
    """A truth value (symbols count as numbers here: sympy makes them Booleans too)."""
    return isinstance(expr, sympy.logic.boolalg.Boolean) and not isinstance(expr, sympy.Expr)


def ite(condition: sympy.Basic, then: sympy.Basic, otherwise: sympy.Basic) -> sympy.Basic:
    """``then`` where ``condition`` holds, else ``otherwise``: boolean logic for booleans, a
    ``Piecewise`` for integers."""
    if condition is sympy.true or then == otherwise:
        return then
    if condition is sympy.false:
        return otherwise
    if is_boolean(then):
        return tidy(
            sympy.Or(sympy.And(condition, then), sympy.And(sympy.Not(condition), otherwise))
        )
    return tidy(sympy.Piecewise((then, condition), (otherwise, True)))


def tidy(expr: sympy.Basic) -> sympy.Basic:
    """``expr`` with arithmetic folded into its selects, branches whose condition fixes an
    index resolved, and selects with one value left collapsed."""
    if not expr.has(sympy.Piecewise):
        return expr
    expr = sympy.piecewise_fold(expr)
    return expr.replace(lambda e: isinstance(e, sympy.Piecewise), _tidy_piecewise)


def _tidy_piecewise(piecewise: sympy.Piecewise) -> sympy.Basic:
    kept: list[tuple[sympy.Basic, sympy.Basic]] = []
    for value, condition in piecewise.args:
        if condition is sympy.false:
            continue
        pinned = _pinned(condition)
        if pinned is not None:
            value = value.xreplace(pinned)
        kept.append((value, condition))
        if condition is sympy.true:
            break
    if not kept:
        raise ValueError("a select without a branch that applies")
    values = [v for v, _ in kept]
    if all(v == values[0] for v in values[1:]) and kept[-1][1] is sympy.true:
        return values[0]
    if kept[0][1] is sympy.true:
        return values[0]
    if is_boolean(values[0]):
        result = values[-1]
        for value, condition in reversed(kept[:-1]):
            result = sympy.Or(sympy.And(condition, value), sympy.And(sympy.Not(condition), result))
        return result
    return sympy.Piecewise(*kept)


def _pinned(condition: sympy.Basic) -> dict[sympy.Symbol, sympy.Integer] | None:
    """{x: v} when ``condition`` holds for exactly one value v of its one nonnegative integer
    symbol x (``i0 < 1`` pins i0 to 0)."""
    symbols = condition.free_symbols
    if len(symbols) != 1:
        return None
    (symbol,) = symbols
    if not (symbol.is_integer and symbol.is_nonnegative):
        return None
    try:
        allowed = condition.as_set().intersect(sympy.Interval(0, sympy.oo))
    except (NotImplementedError, TypeError, ValueError):
        return None
    if allowed.is_empty or not isinstance(allowed, sympy.Interval | sympy.FiniteSet):
        return None
    low, high = allowed.inf, allowed.sup
    if not (low.is_finite and high.is_finite):
        return None
    interval = isinstance(allowed, sympy.Interval)
    first = sympy.floor(low) + 1 if interval and allowed.left_open else sympy.ceiling(low)
    last = sympy.ceiling(high) - 1 if interval and allowed.right_open else sympy.floor(high)
    if first == last:
        return {symbol: sympy.Integer(first)}
    return None
