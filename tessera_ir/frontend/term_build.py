"""Building terms (``terms.py``) with folding: every constructor here returns the simplest
term equal to what it was asked for.

* Operands that are all constants are computed by calling the aten op itself on one-element
  tensors of the operands' dtypes and ranks, so the result is torch's to the last bit.
* Integer and boolean ops on ``Sym`` operands become sympy algebra (``sym_algebra.py``).
* A comparison of a select is the select of the comparisons, so ``tril(ones(S, S)) == 0``
  is the boolean ``k > q``; a comparison of an integer converted to f32 or f64 is the
  comparison of the integer (exact below 2^24, far beyond any sequence length).
* A select between two applications of one op that differ in one operand selects that
  operand instead; between two reads of one table it reads at the selected index.
* Multiplying by 1, adding or subtracting 0 and dividing by 1 (exact in any float dtype) are
  dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import sympy
import torch

from . import sym_algebra as alg
from .terms import Apply, Cast, Choose, Number, Read, Scalar, Sym, Term

aten = torch.ops.aten

# Float dtypes that hold every integer up to 2^24 exactly.
_EXACT_INTEGER_FLOATS = (torch.float32, torch.float64)
_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge"}
_MIRRORED = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_LOGICAL = {
    "logical_and": sympy.And,
    "bitwise_and": sympy.And,
    "__and__": sympy.And,
    "logical_or": sympy.Or,
    "bitwise_or": sympy.Or,
    "__or__": sympy.Or,
    "logical_xor": sympy.Xor,
    "bitwise_xor": sympy.Xor,
    "__xor__": sympy.Xor,
}


def number(value: Scalar, dtype: torch.dtype) -> Term:
    """The constant ``value`` converted to ``dtype`` as torch converts it."""
    if dtype.is_floating_point:
        return Number(float(torch.tensor(float(value), dtype=torch.float64).to(dtype)), dtype)
    if dtype == torch.bool:
        return Sym(sympy.true if value else sympy.false, dtype)
    return Sym(sympy.Integer(int(value)), dtype)


def constant_of(term: Term | Scalar) -> Scalar | None:
    """The Python value of a constant term (or scalar); None when it varies."""
    if isinstance(term, bool | int | float):
        return term
    if isinstance(term, Number):
        return term.value
    if isinstance(term, Sym):
        if term.expr is sympy.true or term.expr is sympy.false:
            return bool(term.expr)
        if isinstance(term.expr, sympy.Integer):
            return int(term.expr)
    return None


def _tensor(value: Scalar, dtype: torch.dtype, rank: int) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype).reshape((1,) * max(rank, 0))


def _from_tensor(result: object) -> Term:
    if not isinstance(result, torch.Tensor) or result.numel() != 1:
        raise TypeError(f"an elementwise op gave {result!r}")
    return number(result.reshape(()).item(), result.dtype)


def evaluate(
    op: torch._ops.OpOverload,
    operands: Sequence[Term | Scalar],
    ranks: Sequence[int],
    options: Mapping[str, object],
) -> Term:
    """``op`` on constant operands, computed by torch."""
    args: list[object] = []
    for operand, rank in zip(operands, ranks, strict=True):
        value = constant_of(operand)
        assert value is not None, "evaluate() takes constants"
        if isinstance(operand, Term):
            args.append(_tensor(value, operand.dtype, rank))
        else:
            args.append(value)
    with torch.no_grad():
        return _from_tensor(op(*args, **options))


def _sym(term: Term | Scalar) -> sympy.Basic | None:
    """The sympy value of an integer/boolean term or scalar (bools as true/false)."""
    if isinstance(term, bool):
        return sympy.true if term else sympy.false
    if isinstance(term, int):
        return sympy.Integer(term)
    if isinstance(term, Sym):
        return term.expr
    return None


def _integer(expr: sympy.Basic) -> sympy.Expr:
    return alg.as_integer(expr) if alg.is_boolean(expr) else expr


def _algebra(
    name: str, values: list[sympy.Basic], options: Mapping[str, object], dtype: torch.dtype
) -> sympy.Basic | None:
    """The sympy form of integer/boolean op ``name``, or None when it has none."""
    alpha = options.get("alpha", 1)
    if not isinstance(alpha, int):
        return None
    if dtype == torch.bool:
        if name in _LOGICAL and len(values) == 2:
            return _LOGICAL[name](*values)
        if name in ("logical_not", "bitwise_not") and len(values) == 1:
            return sympy.Not(values[0])
        if name == "add" and alpha == 1:
            return sympy.Or(*values)
        if name == "mul":
            return sympy.And(*values)
        if name in _COMPARISONS and len(values) == 2:
            return alg.relation(name, _integer(values[0]), _integer(values[1]))
        return None
    numbers = [_integer(v) for v in values]
    if name == "add":
        return numbers[0] + alpha * numbers[1]
    if name == "sub":
        return numbers[0] - alpha * numbers[1]
    if name == "rsub":
        return numbers[1] - alpha * numbers[0]
    if name == "mul":
        return numbers[0] * numbers[1]
    if name == "neg":
        return -numbers[0]
    if name == "abs":
        return sympy.Abs(numbers[0])
    if name in ("maximum", "minimum"):
        return (sympy.Max if name == "maximum" else sympy.Min)(*numbers)
    if name == "pow":
        exponent = numbers[1]
        if isinstance(exponent, sympy.Integer) and exponent >= 0:
            return numbers[0] ** exponent
        return None
    floor = name == "floor_divide" or (name == "div" and options.get("rounding_mode") == "floor")
    if floor or name == "remainder":
        divisor = numbers[1]
        if not isinstance(divisor, sympy.Integer) or divisor == 0:
            return None  # division by a value that may be zero: torch's result is not algebra
        return sympy.floor(numbers[0] / divisor) if floor else sympy.Mod(numbers[0], divisor)
    return None


def _is_one(value: Scalar | None) -> bool:
    return value is not None and not isinstance(value, bool) and value == 1


def _is_zero(value: Scalar | None) -> bool:
    return value is not None and not isinstance(value, bool) and value == 0


def _identity(
    name: str,
    operands: Sequence[Term | Scalar],
    options: Mapping[str, object],
    dtype: torch.dtype,
) -> Term | None:
    """x for x·1, 1·x, x ± 0, 0 + x and x / 1 of float dtype ``dtype`` (exact)."""
    if not dtype.is_floating_point or len(operands) != 2 or options.get("alpha", 1) != 1:
        return None
    if options.get("rounding_mode") is not None:
        return None
    first, second = operands
    if name in ("mul", "div", "add", "sub") and isinstance(first, Term) and first.dtype == dtype:
        neutral = _is_one if name in ("mul", "div") else _is_zero
        if neutral(constant_of(second)):
            return first
    if name in ("mul", "add") and isinstance(second, Term) and second.dtype == dtype:
        neutral = _is_one if name == "mul" else _is_zero
        if neutral(constant_of(first)):
            return second
    return None


def apply(
    op: torch._ops.OpOverload,
    operands: Sequence[Term | Scalar],
    ranks: Sequence[int],
    options: Mapping[str, object],
    dtype: torch.dtype,
) -> Term:
    """The element of elementwise ``op`` on ``operands``, with result dtype ``dtype``."""
    name = op.overloadpacket.__name__
    if all(constant_of(o) is not None for o in operands):
        return evaluate(op, operands, ranks, options)
    values = [_sym(o) for o in operands]
    if not dtype.is_floating_point and all(v is not None for v in values):
        found = _algebra(name, [v for v in values if v is not None], options, dtype)
        if found is not None:
            return Sym(alg.tidy(found), dtype)
    if name in _COMPARISONS and len(operands) == 2:
        compared = _compare(op, name, operands, ranks, options)
        if compared is not None:
            return compared
    same = _identity(name, operands, options, dtype)
    if same is not None:
        return same
    return Apply(op, tuple(operands), tuple(ranks), tuple(sorted(options.items())), dtype)


def _compare(
    op: torch._ops.OpOverload,
    name: str,
    operands: Sequence[Term | Scalar],
    ranks: Sequence[int],
    options: Mapping[str, object],
) -> Term | None:
    """A comparison pushed into selects, or read on the integers behind exact casts."""
    first, second = operands
    for side, chosen in ((0, first), (1, second)):
        if isinstance(chosen, Choose):
            other = operands[1 - side]

            def branch(value: Term, side: int = side, other: Term | Scalar = other) -> Term:
                pair = [value, other] if side == 0 else [other, value]
                return apply(op, pair, ranks, options, torch.bool)

            return choose(
                chosen.condition, branch(chosen.then), branch(chosen.otherwise), torch.bool
            )
    integers = [_exact_integer(o) for o in operands]
    if integers[0] is not None and integers[1] is not None:
        return Sym(alg.relation(name, integers[0], integers[1]), torch.bool)
    return None


def _exact_integer(operand: Term | Scalar) -> sympy.Expr | None:
    """The exact value of an operand as a sympy number or integer expression: an integer
    converted to f32/f64, a constant, a Sym."""
    if isinstance(operand, Cast) and operand.dtype in _EXACT_INTEGER_FLOATS:
        source = _sym(operand.source)
        return None if source is None else _integer(source)
    value = constant_of(operand)
    if isinstance(value, float):
        return sympy.Rational(value) if math.isfinite(value) else None
    found = _sym(operand)
    return None if found is None else _integer(found)


def cast(term: Term, dtype: torch.dtype) -> Term:
    """``term`` converted to ``dtype`` as ``Tensor.to(dtype)`` converts it."""
    if term.dtype == dtype:
        return term
    value = constant_of(term)
    if value is not None:
        return _from_tensor(torch.tensor(value, dtype=term.dtype).to(dtype))
    if isinstance(term, Sym):
        if dtype == torch.bool:
            return Sym(alg.as_boolean(_integer(term.expr)), dtype)
        if not dtype.is_floating_point:
            return Sym(_integer(term.expr), dtype)
        return Cast(term, dtype)
    if dtype == torch.bool:
        return apply(aten.ne.Scalar, [term, 0], [0, -1], {}, torch.bool)
    if isinstance(term, Cast) and isinstance(term.source, Sym) and not dtype.is_floating_point:
        if term.dtype in _EXACT_INTEGER_FLOATS:
            return cast(term.source, dtype)
    if isinstance(term, Choose):
        then, otherwise = cast(term.then, dtype), cast(term.otherwise, dtype)
        if constant_of(then) is not None and constant_of(otherwise) is not None:
            return choose(term.condition, then, otherwise, dtype)
    return Cast(term, dtype)


def choose(condition: Term, then: Term, otherwise: Term, dtype: torch.dtype) -> Term:
    """``then`` where ``condition`` holds, else ``otherwise`` (both of ``dtype``)."""
    flag = constant_of(condition)
    if flag is not None:
        return then if flag else otherwise
    if then == otherwise:
        return then
    cond = _sym(condition)
    then_value, otherwise_value = _sym(then), _sym(otherwise)
    if cond is not None and then_value is not None and otherwise_value is not None:
        return Sym(alg.ite(cond, then_value, otherwise_value), dtype)
    hoisted = _hoisted(condition, then, otherwise, dtype)
    if hoisted is not None:
        return hoisted
    return Choose(condition, then, otherwise, dtype)


def _hoisted(condition: Term, then: Term, otherwise: Term, dtype: torch.dtype) -> Term | None:
    """The select moved into the one operand (or index) where ``then`` and ``otherwise``
    differ, when they are the same op."""
    if isinstance(then, Apply) and isinstance(otherwise, Apply):
        if (then.op, then.ranks, then.options) != (
            otherwise.op,
            otherwise.ranks,
            otherwise.options,
        ):
            return None
        differ = [
            k
            for k, (a, b) in enumerate(zip(then.operands, otherwise.operands, strict=True))
            if a != b
        ]
        if len(differ) != 1:
            return None
        k = differ[0]
        a, b = then.operands[k], otherwise.operands[k]
        if not isinstance(a, Term) or not isinstance(b, Term) or a.dtype != b.dtype:
            return None
        operands = list(then.operands)
        operands[k] = choose(condition, a, b, a.dtype)
        return apply(then.op, operands, then.ranks, dict(then.options), dtype)
    cond = _sym(condition)
    if isinstance(then, Read) and isinstance(otherwise, Read) and cond is not None:
        if then.table is not otherwise.table:
            return None
        index = tuple(alg.ite(cond, a, b) for a, b in zip(then.index, otherwise.index, strict=True))
        return Read(then.table, index, dtype)
    if isinstance(then, Cast) and isinstance(otherwise, Cast):
        if then.source.dtype == otherwise.source.dtype:
            return cast(choose(condition, then.source, otherwise.source, then.source.dtype), dtype)
    return None
