"""Reading an attention mask's window off its folded terms, for a region's ``kind``.

A mask is a folded tensor over [..., query, key]: a boolean (true lets the key through, or,
for ``masked_fill``, blocks it) or an additive float (0 lets it through, the dtype's lowest
value or -inf blocks it). Its condition,
rewritten with key = query − d, is a condition on the distance d alone when the mask is the
same for every query; the distances it allows, as a set, are bounded exactly when the mask has
a window (``d < 4``: window 4). The fusion passes classify masks on their own, from the IR
(``passes/mask_eval.py``); this only labels regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch
from sympy.logic.inference import satisfiable

from .folded import Folded
from .term_build import apply
from .terms import Sym, Term, index_symbol

aten = torch.ops.aten

# Additive masks block with the dtype's lowest value or -inf; anything this low blocks.
BLOCKED = -1.0e30


@dataclass(frozen=True)
class MaskWindow:
    """A mask whose condition depends on the query–key distance only; ``window`` is how many
    distances it allows (None: unbounded)."""

    window: int | None


def allowed(term: Term) -> sympy.Basic | None:
    """The condition under which a mask element lets its key through, or None when the
    element is not a mask's (an additive mask must hold 0 or a blocking value)."""
    if term.dtype == torch.bool:
        return term.expr if isinstance(term, Sym) else None
    if not term.dtype.is_floating_point:
        return None
    zero = apply(aten.eq.Scalar, [term, 0.0], [1, -1], {}, torch.bool)
    blocked = apply(aten.le.Scalar, [term, BLOCKED], [1, -1], {}, torch.bool)
    if not isinstance(zero, Sym) or not isinstance(blocked, Sym):
        return None
    # Every element either lets through or blocks (a tautology, read as propositions).
    if satisfiable(sympy.Not(sympy.Or(zero.expr, blocked.expr))) is not False:
        return None
    return zero.expr


def mask_window(value: Folded) -> MaskWindow | None:
    """The window of a folded mask over its last two axes (query, key), or None when the
    value is not a mask that depends on the distance alone."""
    if value.rank < 2:
        return None
    condition = allowed(value.at([index_symbol(a) for a in range(value.rank)]))
    if condition is None or condition in (sympy.true, sympy.false):
        return None
    query, key = index_symbol(value.rank - 2), index_symbol(value.rank - 1)
    distance = sympy.Dummy("d", integer=True, nonnegative=True)
    along = condition.xreplace({query: key + distance})
    if along.free_symbols - {distance}:
        return None
    # Whichever of the condition and its negation allows the diagonal lets keys through.
    for allowing in (along, sympy.Not(along)):
        found = _window(allowing, distance)
        if found is not None:
            return found
    return None


def _window(along: sympy.Basic, distance: sympy.Symbol) -> MaskWindow | None:
    """The window of a mask allowing the distances where ``along`` holds, when that is a run
    of distances from 0."""
    if along is sympy.true:
        return MaskWindow(None)
    if along is sympy.false:
        return None
    try:
        distances = along.as_set().intersect(sympy.Interval(0, sympy.oo))
    except (NotImplementedError, TypeError, ValueError):
        return None
    if not isinstance(distances, sympy.Interval) or not distances.contains(0):
        return None
    if distances.sup is sympy.oo:
        return MaskWindow(None)
    last = sympy.floor(distances.sup)
    if distances.right_open and last == distances.sup:
        last -= 1
    return MaskWindow(int(last) + 1)
