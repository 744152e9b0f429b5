"""Elementwise aten ops: arithmetic, math functions, activations, casts, comparisons, select.

Numerics follow torch on the CPU: the result dtype is the node's (torch's type promotion); a
bf16/f16 tensor combined with a Python scalar (or 0-d tensor) computes in f32 with the scalar's
full value unless that value is exact in the tensor's dtype (then both forms round alike);
transcendental functions of bf16/f16 compute in f32 and round once, as torch's kernels do.
Multiplying by 1, adding 0 and dividing by 1 are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

import sympy
import torch
from torch import fx

from . import layout
from .emitter import Emitter
from .node_args import split_arguments
from .registry import translates
from .types import REDUCED_FLOATS, Shape, exactly_representable
from .values import Scalar, TVal

if TYPE_CHECKING:
    from .translator import Translator

aten = torch.ops.aten

Operand: TypeAlias = TVal | Scalar
Elementwise: TypeAlias = Callable[
    [Emitter, Sequence[Operand], Mapping[str, object], Shape, torch.dtype], TVal
]

# Each elementwise op's IR, from its operands (tensors at any broadcastable shape, or
# scalars), its other arguments by name, the result's shape and dtype. The translator and
# the writer of folded values (``term_writer``) both write elementwise ops through it.
ELEMENTWISE: dict[object, Elementwise] = {}


def elementwise(*ops: object) -> Callable[[Elementwise], Elementwise]:
    """Registers ``function`` as the IR of each of ``ops`` and as their translation."""

    def register(function: Elementwise) -> Elementwise:
        for op in ops:
            ELEMENTWISE[op] = function

        def translate(t: Translator, node: fx.Node) -> TVal:
            arguments, options = split_arguments(node)
            operands = [t.operand(a) for a in arguments]
            return function(t.em, operands, options, t.shape(node), t.dtype(node))

        translates(*ops)(translate)
        return function

    return register


# kind -> (float op, integer op, bool op)
_ARITHMETIC: dict[str, tuple[str, str | None, str | None]] = {
    "add": ("arith.addf", "arith.addi", "arith.ori"),
    "sub": ("arith.subf", "arith.subi", None),
    "mul": ("arith.mulf", "arith.muli", "arith.andi"),
    "div": ("arith.divf", None, None),
    "maximum": ("arith.maximumf", "arith.maxsi", "arith.ori"),
    "minimum": ("arith.minimumf", "arith.minsi", "arith.andi"),
}
_IDENTITY = {"add": 0, "sub": 0, "mul": 1, "div": 1}


def arithmetic(
    em: Emitter, kind: str, a: Operand, b: Operand, shape: Shape, dtype: torch.dtype
) -> TVal:
    """``a <kind> b`` with a result of ``shape`` and ``dtype``, as torch computes it."""
    neutral = _IDENTITY.get(kind)
    if isinstance(b, Scalar) and b.value == neutral and not isinstance(b.value, bool):
        return em.tensor(a, shape, dtype)
    if kind in ("add", "mul") and isinstance(a, Scalar) and a.value == neutral:
        return em.tensor(b, shape, dtype)
    scalar = b if isinstance(b, Scalar) else a if isinstance(a, Scalar) else None
    compute = dtype
    if dtype in REDUCED_FLOATS and scalar is not None and kind in _IDENTITY:
        symbolic = isinstance(scalar.value, sympy.Expr) and not scalar.value.is_Integer
        if symbolic or not exactly_representable(scalar.value, dtype):
            compute = torch.float32
    float_op, int_op, bool_op = _ARITHMETIC[kind]
    op = float_op if compute.is_floating_point else bool_op if compute == torch.bool else int_op
    if op is None:
        em.unsupported(f"'{kind}' on {compute} tensors is not supported")
    result = em.binary(op, em.tensor(a, shape, compute), em.tensor(b, shape, compute))
    return em.cast(result, dtype)


def _binary(kind: str) -> Elementwise:
    def emit(
        em: Emitter,
        operands: Sequence[Operand],
        options: Mapping[str, object],
        shape: Shape,
        dtype: torch.dtype,
    ) -> TVal:
        a, b = operands
        alpha = options.get("alpha", 1)
        if alpha != 1:
            assert isinstance(alpha, bool | int | float)
            b = arithmetic(em, "mul", b, Scalar(alpha), shape, dtype)
        if options.get("rounding_mode") is not None:
            em.unsupported(f"rounding_mode={options['rounding_mode']!r} is not supported")
        return arithmetic(em, kind, a, b, shape, dtype)

    return emit


elementwise(aten.add.Tensor, aten.add.Scalar)(_binary("add"))
elementwise(aten.sub.Tensor, aten.sub.Scalar)(_binary("sub"))
elementwise(aten.mul.Tensor, aten.mul.Scalar)(_binary("mul"))
elementwise(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode)(_binary("div"))
elementwise(aten.maximum.default)(_binary("maximum"))
elementwise(aten.minimum.default)(_binary("minimum"))


def _floor_quotient(em: Emitter, a: TVal, b: TVal) -> TVal:
    """floor(a / b) in a's dtype: ``floordivsi`` for integers, ``floor(a / b)`` for floats."""
    if a.dtype.is_floating_point:
        return em.unary("math.floor", em.binary("arith.divf", a, b))
    return em.binary("arith.floordivsi", a, b)


@elementwise(aten.floor_divide.default, aten.floor_divide.Scalar)
def floor_divide(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    a, b = (em.tensor(o, shape, dtype) for o in operands)
    if dtype == torch.bool:
        em.unsupported("floor division of bools")
    return _floor_quotient(em, a, b)


@elementwise(aten.remainder.Scalar, aten.remainder.Tensor)
def remainder(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    """a − floor(a / b)·b: the remainder with the divisor's sign, as Python and torch take it."""
    a, b = (em.tensor(o, shape, dtype) for o in operands)
    if dtype == torch.bool:
        em.unsupported("the remainder of bools")
    product = em.binary(
        "arith.mulf" if dtype.is_floating_point else "arith.muli", _floor_quotient(em, a, b), b
    )
    return em.binary("arith.subf" if dtype.is_floating_point else "arith.subi", a, product)


@elementwise(aten.rsub.Scalar, aten.rsub.Tensor)
def rsub(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    a, b = operands
    alpha = options.get("alpha", 1)
    if alpha != 1:
        assert isinstance(alpha, bool | int | float)
        a = arithmetic(em, "mul", a, Scalar(alpha), shape, dtype)
    return arithmetic(em, "sub", b, a, shape, dtype)


# -- math functions and activations ---------------------------------------------------------


def in_float(em: Emitter, x: TVal, dtype: torch.dtype, fn: Callable[[TVal], TVal]) -> TVal:
    """``fn(x)`` computed in ``dtype``, or in f32 and rounded back for bf16/f16."""
    compute = torch.float32 if dtype in REDUCED_FLOATS else dtype
    return em.cast(fn(em.cast(x, compute)), dtype)


def _splat(em: Emitter, value: float, like: TVal) -> TVal:
    return em.splat(value, like.shape, like.dtype)


def _sigmoid(em: Emitter, x: TVal) -> TVal:
    one = _splat(em, 1.0, x)
    exp = em.unary("math.exp", em.unary("arith.negf", x))
    return em.binary("arith.divf", one, em.binary("arith.addf", one, exp))


def _silu(em: Emitter, x: TVal) -> TVal:
    exp = em.unary("math.exp", em.unary("arith.negf", x))
    return em.binary("arith.divf", x, em.binary("arith.addf", _splat(em, 1.0, x), exp))


def _gelu_tanh(em: Emitter, x: TVal) -> TVal:
    cube = em.binary("arith.mulf", em.binary("arith.mulf", x, x), x)
    inner = em.binary("arith.addf", x, em.binary("arith.mulf", _splat(em, 0.044715, x), cube))
    scaled = em.binary("arith.mulf", _splat(em, math.sqrt(2 / math.pi), x), inner)
    one_plus = em.binary("arith.addf", _splat(em, 1.0, x), em.unary("math.tanh", scaled))
    half_x = em.binary("arith.mulf", _splat(em, 0.5, x), x)
    return em.binary("arith.mulf", half_x, one_plus)


def _gelu_erf(em: Emitter, x: TVal) -> TVal:
    erf = em.unary("math.erf", em.binary("arith.mulf", x, _splat(em, math.sqrt(0.5), x)))
    one_plus = em.binary("arith.addf", _splat(em, 1.0, x), erf)
    return em.binary("arith.mulf", em.binary("arith.mulf", _splat(em, 0.5, x), x), one_plus)


_MATH: dict[object, Callable[[Emitter, TVal], TVal]] = {
    aten.rsqrt.default: lambda em, x: em.unary("math.rsqrt", x),
    aten.sqrt.default: lambda em, x: em.unary("math.sqrt", x),
    aten.exp.default: lambda em, x: em.unary("math.exp", x),
    aten.log.default: lambda em, x: em.unary("math.log", x),
    aten.log1p.default: lambda em, x: em.unary("math.log1p", x),
    aten.expm1.default: lambda em, x: em.unary("math.expm1", x),
    aten.tanh.default: lambda em, x: em.unary("math.tanh", x),
    aten.cos.default: lambda em, x: em.unary("math.cos", x),
    aten.sin.default: lambda em, x: em.unary("math.sin", x),
    aten.erf.default: lambda em, x: em.unary("math.erf", x),
    aten.reciprocal.default: lambda em, x: em.binary("arith.divf", _splat(em, 1.0, x), x),
    aten.sigmoid.default: _sigmoid,
    aten.silu.default: _silu,
}


def _tensor_operand(em: Emitter, operand: Operand, shape: Shape) -> TVal:
    """An operand as a tensor of ``shape`` in its own dtype (a Scalar becomes a splat)."""
    if isinstance(operand, Scalar):
        return em.splat(operand.value, shape, operand.dtype or _python_dtype(operand.value))
    return layout.broadcast_to(em, operand, shape)


def _python_dtype(value: object) -> torch.dtype:
    if isinstance(value, bool):
        return torch.bool
    if isinstance(value, int) or isinstance(value, sympy.Expr):
        return torch.int64
    return torch.float32


def _unary(function: Callable[[Emitter, TVal], TVal]) -> Elementwise:
    """A math function, in f32 for bf16/f16 (torch's kernels compute so and round once)."""

    def emit(
        em: Emitter,
        operands: Sequence[Operand],
        options: Mapping[str, object],
        shape: Shape,
        dtype: torch.dtype,
    ) -> TVal:
        x = _tensor_operand(em, operands[0], shape)
        return in_float(em, x, dtype, lambda v: function(em, v))

    return emit


for _op, _function in _MATH.items():
    elementwise(_op)(_unary(_function))


@elementwise(aten.gelu.default)
def gelu(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    approximate = options.get("approximate", "none")
    formula = {"tanh": _gelu_tanh, "none": _gelu_erf}.get(str(approximate))
    if formula is None:
        em.unsupported(f"gelu approximate={approximate!r} is not supported")
    return _unary(formula)(em, operands, options, shape, dtype)


@elementwise(aten.relu.default)
def relu(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    x = em.cast(_tensor_operand(em, operands[0], shape), dtype)
    op = "arith.maximumf" if x.dtype.is_floating_point else "arith.maxsi"
    return em.binary(op, x, em.splat(0, x.shape, x.dtype))


@elementwise(aten.neg.default)
def neg(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    x = em.cast(_tensor_operand(em, operands[0], shape), dtype)
    if x.dtype.is_floating_point:
        return em.unary("arith.negf", x)
    return em.binary("arith.subi", em.splat(0, x.shape, x.dtype), x)


@elementwise(aten.abs.default)
def absolute(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    x = em.cast(_tensor_operand(em, operands[0], shape), dtype)
    return em.unary("math.absf" if x.dtype.is_floating_point else "math.absi", x)


@elementwise(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar)
def power(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    """``base ** exponent``. A constant exponent of 1, 2, 3, ±0.5 or -1 becomes products and
    roots (torch squares exactly too); any other is ``math.powf`` in f32 for bf16/f16."""
    base, exponent = operands
    if isinstance(exponent, Scalar) and not isinstance(exponent.value, sympy.Expr):
        x = em.cast(_tensor_operand(em, base, shape), dtype)
        return _constant_power(em, x, float(exponent.value), dtype)
    if not dtype.is_floating_point:
        em.unsupported("an integer power with a tensor exponent is not supported")
    left = em.cast(_tensor_operand(em, base, shape), dtype)
    right = em.cast(_tensor_operand(em, exponent, shape), dtype)
    compute = torch.float32 if dtype in REDUCED_FLOATS else dtype
    powered = em.binary("math.powf", em.cast(left, compute), em.cast(right, compute))
    return em.cast(powered, dtype)


def _constant_power(em: Emitter, x: TVal, exponent: float, dtype: torch.dtype) -> TVal:
    if exponent == 1:
        return x
    if exponent == 2:
        op = "arith.mulf" if dtype.is_floating_point else "arith.muli"
        return em.binary(op, x, x)
    if not dtype.is_floating_point:
        em.unsupported(f"integer power {exponent} is not supported")
    forms: dict[float, Callable[[TVal], TVal]] = {
        0.5: lambda v: em.unary("math.sqrt", v),
        -0.5: lambda v: em.unary("math.rsqrt", v),
        -1: lambda v: em.binary("arith.divf", _splat(em, 1.0, v), v),
        3: lambda v: em.binary("arith.mulf", em.binary("arith.mulf", v, v), v),
    }
    general = lambda v: em.binary("math.powf", v, _splat(em, exponent, v))  # noqa: E731
    return in_float(em, x, dtype, forms.get(exponent, general))


# -- casts ----------------------------------------------------------------------------------


@elementwise(
    aten.to.dtype,
    aten.to.dtype_layout,
    aten.to.device,
    aten._to_copy.default,
    aten.type_as.default,
    aten.to.other,
)
def to(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    return em.tensor(operands[0], shape, dtype)


# -- comparisons, logic, select -------------------------------------------------------------

_PREDICATES = {"eq": "oeq", "ne": "une", "lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge"}


def _example(operand: Operand) -> torch.Tensor | int | float | bool:
    """A stand-in with the operand's dtype and kind, for ``torch.result_type``: a tensor
    keeps its rank (a 0-d tensor promotes unlike a dimensioned one), a Python number or a
    size stays a number."""
    if isinstance(operand, TVal):
        return torch.empty((1,) * len(operand.shape), dtype=operand.dtype)
    if operand.dtype is not None:
        return torch.empty((), dtype=operand.dtype)
    value = operand.value
    return 1 if isinstance(value, sympy.Expr) else value


def _comparison(predicate: str) -> Elementwise:
    def emit(
        em: Emitter,
        operands: Sequence[Operand],
        options: Mapping[str, object],
        shape: Shape,
        dtype: torch.dtype,
    ) -> TVal:
        a, b = operands
        compute = torch.result_type(_example(a), _example(b))
        return em.compare(predicate, em.tensor(a, shape, compute), em.tensor(b, shape, compute))

    return emit


for _name, _predicate in _PREDICATES.items():
    _packet = getattr(aten, _name)
    elementwise(_packet.Tensor, _packet.Scalar)(_comparison(_predicate))


def _logical(op: str) -> Elementwise:
    def emit(
        em: Emitter,
        operands: Sequence[Operand],
        options: Mapping[str, object],
        shape: Shape,
        dtype: torch.dtype,
    ) -> TVal:
        a = em.tensor(operands[0], shape, torch.bool)
        b = em.tensor(operands[1], shape, torch.bool)
        return em.binary(op, a, b)

    return emit


elementwise(aten.logical_and.default, aten.__and__.Tensor, aten.bitwise_and.Tensor)(
    _logical("arith.andi")
)
elementwise(aten.logical_or.default, aten.__or__.Tensor, aten.bitwise_or.Tensor)(
    _logical("arith.ori")
)
elementwise(aten.logical_xor.default, aten.__xor__.Tensor, aten.bitwise_xor.Tensor)(
    _logical("arith.xori")
)


@elementwise(aten.logical_not.default, aten.bitwise_not.default)
def logical_not(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    if dtype != torch.bool:
        em.unsupported(f"bitwise not of {dtype} values is not supported")
    x = em.tensor(operands[0], shape, torch.bool)
    return em.binary("arith.xori", x, em.splat(True, x.shape, torch.bool))


@elementwise(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
def where(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    condition, a, b = operands
    return em.select(
        em.tensor(condition, shape, torch.bool),
        em.tensor(a, shape, dtype),
        em.tensor(b, shape, dtype),
    )


@elementwise(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def masked_fill(
    em: Emitter,
    operands: Sequence[Operand],
    options: Mapping[str, object],
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    x, mask, value = operands
    return where(em, [mask, value, x], options, shape, dtype)
