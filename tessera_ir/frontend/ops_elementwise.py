"""Elementwise aten ops: arithmetic, math functions, activations, casts, comparisons, select.

Numerics follow torch on the CPU: the result dtype is the node's (torch's type promotion); a
bf16/f16 tensor combined with a Python scalar (or 0-d tensor) computes in f32 with the scalar's
full value unless that value is exact in the tensor's dtype (then both forms round alike);
transcendental functions of bf16/f16 compute in f32 and round once, as torch's kernels do.
Multiplying by 1, adding 0 and dividing by 1 are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import sympy
import torch
from torch import fx

from .emitter import Emitter
from .node_args import number_arg, str_arg
from .registry import translates
from .types import REDUCED_FLOATS, Shape, exactly_representable
from .values import Scalar, TVal

if TYPE_CHECKING:
    from .translator import Translator

aten = torch.ops.aten

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
    em: Emitter, kind: str, a: TVal | Scalar, b: TVal | Scalar, shape: Shape, dtype: torch.dtype
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


def _binary(kind: str) -> Callable[[Translator, fx.Node], TVal]:
    def translate(t: Translator, node: fx.Node) -> TVal:
        a, b = t.operand(node.args[0]), t.operand(node.args[1])
        alpha = node.kwargs.get("alpha", 1)
        if alpha != 1:
            b = arithmetic(t.em, "mul", b, Scalar(alpha), t.shape(node), t.dtype(node))
        if node.kwargs.get("rounding_mode") is not None:
            t.em.unsupported(f"rounding_mode={node.kwargs['rounding_mode']!r} is not supported")
        return arithmetic(t.em, kind, a, b, t.shape(node), t.dtype(node))

    return translate


translates(aten.add.Tensor, aten.add.Scalar)(_binary("add"))
translates(aten.sub.Tensor, aten.sub.Scalar)(_binary("sub"))
translates(aten.mul.Tensor, aten.mul.Scalar)(_binary("mul"))
translates(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode)(_binary("div"))
translates(aten.maximum.default)(_binary("maximum"))
translates(aten.minimum.default)(_binary("minimum"))


@translates(aten.rsub.Scalar, aten.rsub.Tensor)
def rsub(t: Translator, node: fx.Node) -> TVal:
    a, b = t.operand(node.args[0]), t.operand(node.args[1])
    if node.kwargs.get("alpha", 1) != 1:
        a = arithmetic(t.em, "mul", a, Scalar(node.kwargs["alpha"]), t.shape(node), t.dtype(node))
    return arithmetic(t.em, "sub", b, a, t.shape(node), t.dtype(node))


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


@translates(*_MATH)
def math_function(t: Translator, node: fx.Node) -> TVal:
    dtype = t.dtype(node)
    return in_float(t.em, t.arg(node.args[0]), dtype, lambda x: _MATH[node.target](t.em, x))


@translates(aten.gelu.default)
def gelu(t: Translator, node: fx.Node) -> TVal:
    approximate = str_arg(t.em, node, 1, "approximate", "none")
    formula = {"tanh": _gelu_tanh, "none": _gelu_erf}.get(approximate)
    if formula is None:
        t.em.unsupported(f"gelu approximate={approximate!r} is not supported")
    return in_float(t.em, t.arg(node.args[0]), t.dtype(node), lambda x: formula(t.em, x))


@translates(aten.relu.default)
def relu(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    op = "arith.maximumf" if x.dtype.is_floating_point else "arith.maxsi"
    return t.em.binary(op, x, t.em.splat(0, x.shape, x.dtype))


@translates(aten.neg.default)
def neg(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    if x.dtype.is_floating_point:
        return t.em.unary("arith.negf", x)
    return t.em.binary("arith.subi", t.em.splat(0, x.shape, x.dtype), x)


@translates(aten.abs.default)
def absolute(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    return t.em.unary("math.absf" if x.dtype.is_floating_point else "math.absi", x)


@translates(aten.pow.Tensor_Scalar)
def power(t: Translator, node: fx.Node) -> TVal:
    """Small exponents become products and roots (torch squares exactly too)."""
    em, dtype = t.em, t.dtype(node)
    x, exponent = em.cast(t.arg(node.args[0]), dtype), number_arg(em, node, 1, "exponent")
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
    general = lambda v: em.binary("math.powf", v, _splat(em, float(exponent), v))  # noqa: E731
    return in_float(em, x, dtype, forms.get(exponent, general))


# -- casts ----------------------------------------------------------------------------------


@translates(
    aten.to.dtype,
    aten.to.dtype_layout,
    aten.to.device,
    aten._to_copy.default,
    aten.type_as.default,
    aten.to.other,
)
def to(t: Translator, node: fx.Node) -> TVal:
    return t.em.cast(t.arg(node.args[0]), t.dtype(node))


# -- comparisons, logic, select -------------------------------------------------------------

_PREDICATES = {"eq": "oeq", "ne": "une", "lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge"}


def _comparison(predicate: str) -> Callable[[Translator, fx.Node], TVal]:
    def translate(t: Translator, node: fx.Node) -> TVal:
        a, b = t.operand(node.args[0]), t.operand(node.args[1])
        compute = torch.result_type(t.example(node.args[0]), t.example(node.args[1]))
        shape = t.shape(node)
        return t.em.compare(
            predicate, t.em.tensor(a, shape, compute), t.em.tensor(b, shape, compute)
        )

    return translate


for _name, _predicate in _PREDICATES.items():
    _op = getattr(aten, _name)
    translates(_op.Tensor, _op.Scalar)(_comparison(_predicate))


def _logical(op: str) -> Callable[[Translator, fx.Node], TVal]:
    def translate(t: Translator, node: fx.Node) -> TVal:
        shape = t.shape(node)
        a = t.em.tensor(t.operand(node.args[0]), shape, torch.bool)
        b = t.em.tensor(t.operand(node.args[1]), shape, torch.bool)
        return t.em.binary(op, a, b)

    return translate


translates(aten.logical_and.default, aten.__and__.Tensor, aten.bitwise_and.Tensor)(
    _logical("arith.andi")
)
translates(aten.logical_or.default, aten.__or__.Tensor, aten.bitwise_or.Tensor)(
    _logical("arith.ori")
)


@translates(aten.logical_not.default)
def logical_not(t: Translator, node: fx.Node) -> TVal:
    x = t.em.cast(t.arg(node.args[0]), torch.bool)
    return t.em.binary("arith.xori", x, t.em.splat(True, x.shape, torch.bool))


@translates(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
def where(t: Translator, node: fx.Node) -> TVal:
    shape, dtype = t.shape(node), t.dtype(node)
    condition = t.em.tensor(t.operand(node.args[0]), shape, torch.bool)
    a = t.em.tensor(t.operand(node.args[1]), shape, dtype)
    b = t.em.tensor(t.operand(node.args[2]), shape, dtype)
    return t.em.select(condition, a, b)
