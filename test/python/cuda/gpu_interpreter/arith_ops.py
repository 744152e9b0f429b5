"""Rules: arith."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from mlir import ir

from .driver import rule
from .kinds import FLOATS, UNSIGNED, from_bits, kind_of, round_to, to_bits

if TYPE_CHECKING:
    from .driver import Kernel
    from .kinds import Kind
    from .state import Step, _Op, _Run


def _unsigned(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.bool_:
        return x
    return x.astype(UNSIGNED[x.dtype.type])


def _signed_like(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    return x.astype(like.dtype)


def _nonzero(x: np.ndarray) -> np.ndarray:
    return np.where(x == 0, 1, x)


def _divsi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    b = _nonzero(b)
    q = a // b
    return np.where((q < 0) & (q * b != a), q + 1, q).astype(a.dtype)


INT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "arith.addi": np.add,
    "arith.subi": np.subtract,
    "arith.muli": np.multiply,
    "arith.andi": np.bitwise_and,
    "arith.ori": np.bitwise_or,
    "arith.xori": np.bitwise_xor,
    "arith.maxsi": np.maximum,
    "arith.minsi": np.minimum,
    "arith.maxui": lambda a, b: _signed_like(np.maximum(_unsigned(a), _unsigned(b)), a),
    "arith.minui": lambda a, b: _signed_like(np.minimum(_unsigned(a), _unsigned(b)), a),
    "arith.divui": lambda a, b: _signed_like(_unsigned(a) // _unsigned(_nonzero(b)), a),
    "arith.remui": lambda a, b: _signed_like(_unsigned(a) % _unsigned(_nonzero(b)), a),
    "arith.divsi": _divsi,
    "arith.remsi": lambda a, b: (a - _divsi(a, b) * _nonzero(b)).astype(a.dtype),
    "arith.floordivsi": lambda a, b: (a // _nonzero(b)).astype(a.dtype),
    "arith.ceildivsi": lambda a, b: (-((-a) // _nonzero(b))).astype(a.dtype),
    "arith.ceildivui": lambda a, b: _signed_like(
        -(-_unsigned(a).astype(np.int64) // _unsigned(_nonzero(b)).astype(np.int64)), a
    ),
    "arith.shli": lambda a, b: np.left_shift(a, b.astype(a.dtype)),
    "arith.shrsi": lambda a, b: np.right_shift(a, b.astype(a.dtype)),
    "arith.shrui": lambda a, b: _signed_like(np.right_shift(_unsigned(a), _unsigned(b)), a),
}
FLOAT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "arith.addf": np.add,
    "arith.subf": np.subtract,
    "arith.mulf": np.multiply,
    "arith.divf": np.divide,
    "arith.remf": np.fmod,
    "arith.maxnumf": np.fmax,
    "arith.minnumf": np.fmin,
    "arith.maximumf": np.maximum,
    "arith.minimumf": np.minimum,
    "math.copysign": np.copysign,
    "math.powf": lambda a, b: np.power(a.astype(np.float64), b),
    "math.atan2": lambda a, b: np.arctan2(a.astype(np.float64), b),
}


def _elementwise(k: Kernel, op: ir.Operation, fn: Callable[..., np.ndarray]) -> Step:
    ins = k.ins(op)
    out = k.slot(op.results[0])
    if len(ins) == 1:
        (a,) = ins

        def unary(run: _Run) -> None:
            r = run.regs
            r[out] = fn(r[a])

        return unary
    if len(ins) == 2:
        a, b = ins

        def binary(run: _Run) -> None:
            r = run.regs
            r[out] = fn(r[a], r[b])

        return binary
    if len(ins) == 3:
        a, b, c = ins

        def ternary(run: _Run) -> None:
            r = run.regs
            r[out] = fn(r[a], r[b], r[c])

        return ternary

    def nary(run: _Run) -> None:
        r = run.regs
        r[out] = fn(*[r[i] for i in ins])

    return nary


def _rounded(op: ir.Operation, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``fn`` with its result rounded to the op's result type when that is bf16/f16."""
    kind = kind_of(op.results[0].type)
    if kind.name in ("bf16", "f16"):
        return lambda *xs: round_to(kind, fn(*xs))
    if kind.name == "f32":
        return lambda *xs: np.asarray(fn(*xs)).astype(np.float32, copy=False)
    return fn


@rule(*INT_BINARY)
def _int_binary(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    fn = INT_BINARY[op.name]
    if kind_of(op.results[0].type).name == "i1" and op.name in ("arith.addi", "arith.xori"):
        fn = np.logical_xor
    return _elementwise(k, op, fn)


@rule(*FLOAT_BINARY)
def _float_binary(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, _rounded(op, FLOAT_BINARY[op.name]))


@rule("arith.negf")
def _negf(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, np.negative)


@rule("arith.constant")
def _constant(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])
    type_ = op.results[0].type
    kind = kind_of(type_)
    attr = op.attributes["value"]
    if isinstance(type_, ir.VectorType):
        dense = ir.DenseElementsAttr(attr)
        if dense.is_splat:
            number = _number(dense.get_splat_value(), kind)
            value = np.full((1, *type_.shape), number)
        else:
            value = np.array(dense).reshape(1, *type_.shape)
    else:
        value = np.array([_number(attr, kind)])
    value = round_to(kind, value) if kind.name in FLOATS else value.astype(kind.reg)

    def constant(run: _Run) -> None:
        run.regs[out] = value

    return constant


def _number(attr: ir.Attribute, kind: Kind) -> float | int | bool:
    if isinstance(attr, ir.FloatAttr):
        return ir.FloatAttr(attr).value
    if isinstance(attr, ir.BoolAttr):
        return bool(ir.BoolAttr(attr).value)
    value = ir.IntegerAttr(attr).value
    return value != 0 if kind.name == "i1" else value


CMPI: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: np.equal,
    1: np.not_equal,
    2: np.less,
    3: np.less_equal,
    4: np.greater,
    5: np.greater_equal,
    6: lambda a, b: _unsigned(a) < _unsigned(b),
    7: lambda a, b: _unsigned(a) <= _unsigned(b),
    8: lambda a, b: _unsigned(a) > _unsigned(b),
    9: lambda a, b: _unsigned(a) >= _unsigned(b),
}


def _unordered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isnan(a) | np.isnan(b)


CMPF: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: lambda a, b: np.zeros(np.broadcast(a, b).shape, dtype=bool),
    1: np.equal,
    2: np.greater,
    3: np.greater_equal,
    4: np.less,
    5: np.less_equal,
    6: lambda a, b: (a != b) & ~_unordered(a, b),
    7: lambda a, b: ~_unordered(a, b),
    8: lambda a, b: (a == b) | _unordered(a, b),
    9: lambda a, b: ~(a <= b),
    10: lambda a, b: ~(a < b),
    11: lambda a, b: ~(a >= b),
    12: lambda a, b: ~(a > b),
    13: np.not_equal,
    14: _unordered,
    15: lambda a, b: np.ones(np.broadcast(a, b).shape, dtype=bool),
}


@rule("arith.cmpi")
def _cmpi(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, CMPI[ir.IntegerAttr(op.attributes["predicate"]).value])


@rule("arith.cmpf")
def _cmpf(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, CMPF[ir.IntegerAttr(op.attributes["predicate"]).value])


@rule("arith.select")
def _select(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    def select(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ndim = max(a.ndim, b.ndim)
        if c.ndim < ndim:
            c = c.reshape(c.shape[0], *([1] * (ndim - c.ndim)))
        return np.where(c, a, b)

    return _elementwise(k, op, select)


@rule(
    "arith.index_cast",
    "arith.index_castui",
    "arith.extsi",
    "arith.extui",
    "arith.trunci",
    "arith.extf",
    "arith.truncf",
    "arith.sitofp",
    "arith.uitofp",
    "arith.fptosi",
    "arith.fptoui",
    "arith.bitcast",
)
def _cast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    source = kind_of(op.operands[0].type)
    target = kind_of(op.results[0].type)
    name = op.name
    unsigned = name in ("arith.index_castui", "arith.extui", "arith.uitofp", "arith.fptoui")

    def cast(x: np.ndarray) -> np.ndarray:
        if name == "arith.bitcast":
            return from_bits(target, to_bits(source, x))
        if target.name in FLOATS:
            if source.name not in FLOATS and unsigned:
                x = _unsigned(x)
            return round_to(target, x.astype(np.float64) if target.name != "f32" else x)
        if source.name in FLOATS:
            x = np.trunc(np.nan_to_num(x.astype(np.float64), nan=0.0))
            info_ = np.iinfo(np.uint64 if unsigned else target.reg)
            return np.clip(x, info_.min, info_.max).astype(target.reg)
        if target.name == "i1":
            return (x & 1).astype(bool)
        if unsigned and source.size < target.size:
            x = _unsigned(x)
        return x.astype(target.reg)

    return _elementwise(k, op, cast)
