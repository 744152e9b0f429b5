"""The elements of tensors computed from sizes and constants, as terms.

The folder (``folder.py``) evaluates such a tensor as a function from an index (one sympy
integer expression per axis) to the element there, a ``Term``:

* ``Sym``: an integer or boolean element as a sympy expression over index symbols (``i0``,
  ``i1``, ...) and the sizes torch.export names (``s27``), so that sympy's canonical forms do
  the algebra: ``q - (q - 1)`` is 1, ``k <= q + (S - S)`` is ``k <= q``;
* ``Number``: a float constant, already rounded to its dtype;
* ``Cast``: a conversion between dtypes (``arange(S).float()`` is a cast of ``Sym(i0)``);
* ``Apply``: an elementwise aten op applied to terms and Python scalars, in the op's dtype;
* ``Choose``: a select between two terms;
* ``Read``: the element of a constant tensor at an index computed from the indices.

Terms are immutable, compared by structure and hashed once, so equal computations are written
once however many tensors reach them. Building them with folding and simplification is
``term_build.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import sympy
import torch

Index = tuple[sympy.Expr, ...]
Scalar = float | int | bool


@cache
def index_symbol(axis: int) -> sympy.Symbol:
    """The symbol standing for the index along ``axis`` (nonnegative, like any index)."""
    return sympy.Symbol(f"i{axis}", integer=True, nonnegative=True)


def is_index_symbol(symbol: sympy.Basic) -> bool:
    return (
        isinstance(symbol, sympy.Symbol)
        and not isinstance(symbol, sympy.Dummy)
        and symbol.name.startswith("i")
        and symbol.name[1:].isdigit()
    )


def axis_of(symbol: sympy.Symbol) -> int:
    return int(symbol.name[1:])


class Table:
    """A constant tensor read by ``Read`` terms; compared by identity (one per constant)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __repr__(self) -> str:
        return f"Table({list(self.tensor.shape)}, {self.tensor.dtype})"


class Term:
    """One element: its dtype and how it is computed (see the module docstring)."""

    __slots__ = ("_hash", "dtype")
    dtype: torch.dtype

    def key(self) -> tuple[object, ...]:
        raise NotImplementedError

    def children(self) -> tuple[Term, ...]:
        """The terms this one computes from."""
        return ()

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(self) is not type(other) or hash(self) != hash(other):
            return False
        assert isinstance(other, Term)
        return self.dtype == other.dtype and self.key() == other.key()

    def __hash__(self) -> int:
        found: int | None = getattr(self, "_hash", None)
        if found is None:
            found = hash((type(self).__name__, self.dtype, self.key()))
            self._hash = found
        return found

    def __repr__(self) -> str:
        inner = ", ".join(repr(k) for k in self.key())
        return f"{type(self).__name__}[{str(self.dtype).removeprefix('torch.')}]({inner})"


class Sym(Term):
    """An integer or boolean element as a sympy expression."""

    __slots__ = ("expr",)

    def __init__(self, expr: sympy.Basic, dtype: torch.dtype) -> None:
        assert not dtype.is_floating_point, "a Sym is an integer or boolean element"
        self.expr = expr
        self.dtype = dtype

    def key(self) -> tuple[object, ...]:
        return (self.expr,)


class Number(Term):
    """A float constant (exactly a value of ``dtype``)."""

    __slots__ = ("value",)

    def __init__(self, value: float, dtype: torch.dtype) -> None:
        assert dtype.is_floating_point, "a Number is a float element"
        self.value = float(value)
        self.dtype = dtype

    def key(self) -> tuple[object, ...]:
        # -0.0 and 0.0 differ as constants; NaN equals itself here.
        return (repr(self.value),)


class Cast(Term):
    """``source`` converted to ``dtype`` as ``Tensor.to`` does."""

    __slots__ = ("source",)

    def __init__(self, source: Term, dtype: torch.dtype) -> None:
        self.source = source
        self.dtype = dtype

    def key(self) -> tuple[object, ...]:
        return (self.source,)

    def children(self) -> tuple[Term, ...]:
        return (self.source,)


class Apply(Term):
    """An elementwise aten ``op`` on ``operands`` (terms, or Python scalars as the graph gave
    them). ``ranks`` is each operand's rank in the graph (-1 for a Python scalar), which
    decides torch's type promotion; ``options`` are the op's other arguments by name."""

    __slots__ = ("op", "operands", "options", "ranks")

    def __init__(
        self,
        op: torch._ops.OpOverload,
        operands: tuple[Term | Scalar, ...],
        ranks: tuple[int, ...],
        options: tuple[tuple[str, object], ...],
        dtype: torch.dtype,
    ) -> None:
        self.op = op
        self.operands = operands
        self.ranks = ranks
        self.options = options
        self.dtype = dtype

    def key(self) -> tuple[object, ...]:
        # Python scalars keep their type: 2 and 2.0 promote differently.
        operands = tuple(o if isinstance(o, Term) else (type(o).__name__, o) for o in self.operands)
        return (self.op, operands, self.ranks, self.options)

    def children(self) -> tuple[Term, ...]:
        return tuple(o for o in self.operands if isinstance(o, Term))


class Choose(Term):
    """``then`` where ``condition`` (a boolean term) holds, else ``otherwise``."""

    __slots__ = ("condition", "otherwise", "then")

    def __init__(self, condition: Term, then: Term, otherwise: Term, dtype: torch.dtype) -> None:
        self.condition = condition
        self.then = then
        self.otherwise = otherwise
        self.dtype = dtype

    def key(self) -> tuple[object, ...]:
        return (self.condition, self.then, self.otherwise)

    def children(self) -> tuple[Term, ...]:
        return (self.condition, self.then, self.otherwise)


class Read(Term):
    """``table[index]`` for a constant ``table``, the index computed from the indices."""

    __slots__ = ("index", "table")

    def __init__(self, table: Table, index: Index, dtype: torch.dtype) -> None:
        self.table = table
        self.index = index
        self.dtype = dtype

    def key(self) -> tuple[object, ...]:
        return (id(self.table), self.index)


def symbols_of(term: Term) -> frozenset[sympy.Symbol]:
    """Every sympy symbol a term depends on (indices and sizes)."""
    return _symbols(term)


@cache
def _symbols(term: Term) -> frozenset[sympy.Symbol]:
    found: set[sympy.Symbol] = set()
    if isinstance(term, Sym):
        found |= term.expr.free_symbols
    elif isinstance(term, Read):
        for entry in term.index:
            found |= entry.free_symbols
    for child in term.children():
        found |= _symbols(child)
    return frozenset(found)


def index_axes(term: Term) -> tuple[int, ...]:
    """The axes whose index the term depends on, in order."""
    return tuple(sorted(axis_of(s) for s in symbols_of(term) if is_index_symbol(s)))


def substitute(term: Term, mapping: dict[sympy.Symbol, sympy.Expr]) -> Term:
    """``term`` with symbols replaced (all at once) in every expression it holds."""
    if not mapping:
        return term
    memo: dict[Term, Term] = {}

    def visit(node: Term) -> Term:
        if node in memo:
            return memo[node]
        result: Term
        if isinstance(node, Sym):
            result = Sym(node.expr.xreplace(mapping), node.dtype)
        elif isinstance(node, Number):
            result = node
        elif isinstance(node, Cast):
            result = Cast(visit(node.source), node.dtype)
        elif isinstance(node, Apply):
            operands = tuple(visit(o) if isinstance(o, Term) else o for o in node.operands)
            result = Apply(node.op, operands, node.ranks, node.options, node.dtype)
        elif isinstance(node, Choose):
            result = Choose(
                visit(node.condition), visit(node.then), visit(node.otherwise), node.dtype
            )
        elif isinstance(node, Read):
            index = tuple(sympy.sympify(e).xreplace(mapping) for e in node.index)
            result = Read(node.table, index, node.dtype)
        else:
            raise TypeError(f"unknown term {node!r}")
        memo[node] = result
        return result

    return visit(term)


def walk(term: Term, visit: Callable[[Term], None]) -> None:
    """Calls ``visit`` on every distinct term under ``term`` (itself included)."""
    seen: set[Term] = set()
    pending = [term]
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        visit(node)
        pending.extend(node.children())
