"""Evaluates arith/math expressions on Python numbers, to recognise a function by its values.

Fusion patterns use it to ask "is this elementwise chain tanh-GELU?" or "is this mask generic
causal with a window?" without depending on the order in which a front end wrote the ops:
evaluate the expression at probe points and compare with the known function.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

from mlir import ir

from .constant_values import dense_element, scalar_constant, splat_value
from .match import producer, producer_named


class NotEvaluable(Exception):
    """The expression holds an op or a value the evaluator does not know."""


_FLOAT_BINARY: dict[str, Callable[[float, float], float]] = {
    "arith.addf": lambda a, b: a + b,
    "arith.subf": lambda a, b: a - b,
    "arith.mulf": lambda a, b: a * b,
    "arith.divf": lambda a, b: a / b if b != 0 else math.copysign(math.inf, a) if a else math.nan,
    "arith.maximumf": max,
    "arith.minimumf": min,
    "arith.maxnumf": max,
    "arith.minnumf": min,
    "math.powf": lambda a, b: math.pow(a, b),
}
_FLOAT_UNARY: dict[str, Callable[[float], float]] = {
    "arith.negf": lambda a: -a,
    "arith.extf": lambda a: a,
    "arith.truncf": lambda a: a,
    "math.tanh": math.tanh,
    "math.exp": lambda a: math.exp(a) if a < 700 else math.inf,
    "math.erf": math.erf,
    "math.sqrt": lambda a: math.sqrt(a) if a >= 0 else math.nan,
    "math.rsqrt": lambda a: 1 / math.sqrt(a) if a > 0 else math.inf,
    "math.absf": abs,
    "math.floor": lambda a: float(math.floor(a)),
    "math.log": lambda a: math.log(a) if a > 0 else -math.inf,
    "math.cos": math.cos,
    "math.sin": math.sin,
}
_INT_BINARY: dict[str, Callable[[int, int], int]] = {
    "arith.addi": lambda a, b: a + b,
    "arith.subi": lambda a, b: a - b,
    "arith.muli": lambda a, b: a * b,
    "arith.divsi": lambda a, b: int(a / b) if b else 0,
    "arith.floordivsi": lambda a, b: a // b if b else 0,
    "arith.ceildivsi": lambda a, b: -(-a // b) if b else 0,
    "arith.remsi": lambda a, b: int(math.fmod(a, b)) if b else 0,
    "arith.andi": lambda a, b: a & b,
    "arith.ori": lambda a, b: a | b,
    "arith.xori": lambda a, b: a ^ b,
    "arith.maxsi": max,
    "arith.minsi": min,
}
_CASTS = {
    "arith.index_cast",
    "arith.index_castui",
    "arith.extsi",
    "arith.extui",
    "arith.trunci",
    "arith.sitofp",
    "arith.uitofp",
    "arith.fptosi",
}


_MOVES = ("linalg.broadcast", "tensor.expand_shape", "tensor.collapse_shape", "tensor.cast")


def _never(a: float, b: float) -> bool:
    return False


def _always(a: float, b: float) -> bool:
    return True


# arith.cmpi predicates: eq, ne, slt, sle, sgt, sge, ult, ule, ugt, uge (an unsigned predicate
# compares the same Python ints as its signed one).
_INT_ORDER = (operator.lt, operator.le, operator.gt, operator.ge)
_CMPI = [operator.eq, operator.ne, *_INT_ORDER, *_INT_ORDER]
# arith.cmpf predicates: false, oeq, ogt, oge, olt, ole, one, ord, ueq, ugt, uge, ult, ule,
# une, uno, true (NaN handling is irrelevant for the probes used here).
_FLOAT_ORDER = (operator.eq, operator.gt, operator.ge, operator.lt, operator.le, operator.ne)
_CMPF = [_never, *_FLOAT_ORDER, _always, *_FLOAT_ORDER, _never, _always]


class Evaluator:
    """Evaluates SSA values given numbers for some leaves (``env``) and linalg.index dims."""

    def __init__(
        self, env: dict[ir.Value, float | int] | None = None, indices: tuple[int, ...] = ()
    ) -> None:
        self.env = dict(env or {})
        self.indices = indices

    def __call__(self, value: ir.Value) -> float | int | bool:
        if value in self.env:
            return self.env[value]
        op = producer(value)
        if op is None:
            raise NotEvaluable(f"block argument {value.get_name()} has no value")
        result = self._evaluate(op)
        self.env[value] = result
        return result

    def _evaluate(self, op: ir.Operation) -> float | int | bool:
        name = op.name
        args = op.operands
        if name == "arith.constant":
            found = scalar_constant(op.results[0])
            if found is None:
                found = splat_value(op.results[0])
            if found is None:
                raise NotEvaluable("non-splat constant")
            return found
        if name == "linalg.fill":
            found = splat_value(op.results[0])
            if found is None:
                raise NotEvaluable(f"{name} of a non-constant")
            return found
        if name in _MOVES:
            # Moving elements keeps their values: an element of the result is one of the
            # source's (an elementwise chain may cross a reshape of the heads, say).
            found = splat_value(op.results[0])
            return found if found is not None else self(args[0])
        if name == "tensor.extract":
            return self._extract(op)
        if name == "linalg.index":
            dim = ir.IntegerAttr(op.attributes["dim"]).value
            if dim >= len(self.indices):
                raise NotEvaluable(f"linalg.index {dim} has no value")
            return self.indices[dim]
        if name in _FLOAT_BINARY:
            return _FLOAT_BINARY[name](float(self(args[0])), float(self(args[1])))
        if name in _FLOAT_UNARY:
            return _FLOAT_UNARY[name](float(self(args[0])))
        if name in _INT_BINARY:
            return _INT_BINARY[name](int(self(args[0])), int(self(args[1])))
        if name in _CASTS:
            value = self(args[0])
            return float(value) if name.endswith("tofp") else int(value)
        if name == "arith.cmpi":
            predicate = ir.IntegerAttr(op.attributes["predicate"]).value
            return bool(_CMPI[predicate](int(self(args[0])), int(self(args[1]))))
        if name == "arith.cmpf":
            predicate = ir.IntegerAttr(op.attributes["predicate"]).value
            return bool(_CMPF[predicate](float(self(args[0])), float(self(args[1]))))
        if name == "arith.select":
            return self(args[1]) if self(args[0]) else self(args[2])
        if name == "math.fma":
            return float(self(args[0])) * float(self(args[1])) + float(self(args[2]))
        raise NotEvaluable(f"cannot evaluate '{name}'")

    def _extract(self, op: ir.Operation) -> float | int | bool:
        """An element of a dense constant at evaluated indices (a table a front end reads
        inside a generic body)."""
        table = producer_named(op.operands[0], "arith.constant")
        if table is None:
            raise NotEvaluable("tensor.extract from a tensor that is not a constant")
        index = [int(self(i)) for i in list(op.operands)[1:]]
        found = dense_element(table.attributes["value"], index)
        if found is None:
            raise NotEvaluable(f"tensor.extract at {index} outside its constant")
        return found


def evaluate_unary(root: ir.Value, leaf: ir.Value, x: float) -> float | None:
    """root as a function of leaf at x, or None when the chain holds anything but
    elementwise arithmetic on leaf and constants."""
    try:
        return float(Evaluator({leaf: x})(root))
    except (NotEvaluable, OverflowError, ValueError, ZeroDivisionError):
        return None


def evaluate_generic_body(op: ir.Operation, indices: tuple[int, ...]) -> float | int | bool | None:
    """The value a no-input ``linalg.generic`` yields at ``indices`` (None: not evaluable)."""
    body = op.regions[0].blocks[0]
    terminator = [o.operation for o in body.operations][-1]
    try:
        return Evaluator(indices=indices)(terminator.operands[0])
    except (NotEvaluable, OverflowError, ValueError, ZeroDivisionError):
        return None


def is_float_elementwise(name: str) -> bool:
    """True for the float arith/math ops the evaluator knows (casts included): the ops an
    elementwise function such as an activation may be written with."""
    return name in _FLOAT_BINARY or name in _FLOAT_UNARY or name == "math.fma"


def is_elementwise(name: str) -> bool:
    """True for every op the evaluator computes one element at a time (arith/math ops,
    casts, comparisons, select, fma): applied to tensors, the op works elementwise."""
    return (
        name in _FLOAT_BINARY
        or name in _FLOAT_UNARY
        or name in _INT_BINARY
        or name in _CASTS
        or name in ("arith.cmpi", "arith.cmpf", "arith.select", "math.fma")
    )
