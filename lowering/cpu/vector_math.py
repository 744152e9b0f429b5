"""exp, tanh and the MLP activations as inline f32 arithmetic that vectorises.

LLVM turns ``math.exp``/``math.tanh`` on vectors into one libm call per lane, which would
dominate softmax and the gated-MLP epilogue. These versions are plain arithmetic on
``f32`` or ``vector<N x f32>`` values, accurate to about one ulp:

- exp: Cody-Waite reduction x = n·ln2 + r (|r| ≤ ln2/2), the degree-7 Taylor polynomial of e^r
  (truncation error r^8/8! < 6e-9), then 2^n built from exponent bits in two halves so that
  n = -126..128 stays representable. Below -87.34 the result is 0 (no subnormals), above
  ln(FLT_MAX) it is +inf, NaN stays NaN.
- tanh: for |x| < 0.55 the odd polynomial x·P(x²), P a degree-5 least-squares fit of tanh(x)/x
  weighted for relative error (max error 0.75 ulp on that interval); elsewhere
  (1 - e)/(1 + e) with e = exp(-2|x|) (max error 1.4 ulp), with x's sign.
- erf (for exact GELU) stays ``math.erf``, lowered to libm: no Gemma model uses it.
"""

from __future__ import annotations

import math

from .builder import Kernel

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # 9 significant bits: n·_LN2_HI is exact for |n| ≤ 2^15
_LN2_LO = -2.12194440e-4
_EXP_INPUT_MAX = 88.72283935546875  # largest f32 whose exp is finite
_EXP_INPUT_MIN = -87.33654022216797  # exp below this is under FLT_MIN: flushed to 0
_EXP_TAYLOR = [1.0 / math.factorial(i) for i in range(8)]

_TANH_SMALL = 0.55
_TANH_POLY = [
    1.0,
    -0.33333319425582886,
    0.1333261877298355,
    -0.05385589227080345,
    0.021087009459733963,
    -0.006296433974057436,
]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def _int_type(type_: str) -> str:
    return type_.replace("f32", "i32") if type_.startswith("vector") else "i32"


def _bool_type(type_: str) -> str:
    return type_.replace("f32", "i1") if type_.startswith("vector") else "i1"


def const(k: Kernel, value: float, type_: str) -> str:
    return k.splat(value, type_) if type_.startswith("vector") else k.f32(value)


def _iconst(k: Kernel, value: int, type_: str) -> str:
    int_type = _int_type(type_)
    if int_type == "i32":
        return k.i32(value)
    return k.splat_int(value, int_type)


def binary(k: Kernel, opname: str, a: str, b: str, type_: str) -> str:
    return k.op("v", f"arith.{opname} {a}, {b} : {type_}")


def fma(k: Kernel, a: str, b: str, c: str, type_: str) -> str:
    """a·b + c, fused (one rounding)."""
    if type_.startswith("vector"):
        return k.op("v", f"vector.fma {a}, {b}, {c} : {type_}")
    return k.op("v", f"math.fma {a}, {b}, {c} : {type_}")


def select(k: Kernel, cond: str, a: str, b: str, type_: str) -> str:
    return k.op("v", f"arith.select {cond}, {a}, {b} : {_bool_type(type_)}, {type_}")


def cmpf(k: Kernel, predicate: str, a: str, b: str, type_: str) -> str:
    return k.op("c", f"arith.cmpf {predicate}, {a}, {b} : {type_}")


def polynomial(k: Kernel, x: str, coefficients: list[float], type_: str) -> str:
    """c0 + c1·x + ... by Horner's rule with fused multiply-adds."""
    result = const(k, coefficients[-1], type_)
    for c in reversed(coefficients[:-1]):
        result = fma(k, result, x, const(k, c, type_), type_)
    return result


def _pow2(k: Kernel, n: str, type_: str) -> str:
    """2^n for an integer-valued f32 ``n`` in [-126, 127] built from exponent bits."""
    int_type = _int_type(type_)
    ni = k.op("v", f"arith.fptosi {n} : {type_} to {int_type}")
    biased = k.op("v", f"arith.addi {ni}, {_iconst(k, 127, type_)} : {int_type}")
    bits = k.op("v", f"arith.shli {biased}, {_iconst(k, 23, type_)} : {int_type}")
    return k.op("v", f"arith.bitcast {bits} : {int_type} to {type_}")


def exp(k: Kernel, x: str, type_: str) -> str:
    """e^x in f32 (see the module docstring for the method and its error)."""
    clamped = k.op("v", f"arith.maxnumf {x}, {const(k, -88.0, type_)} : {type_}")
    clamped = k.op("v", f"arith.minnumf {clamped}, {const(k, _EXP_INPUT_MAX, type_)} : {type_}")
    scaled = binary(k, "mulf", clamped, const(k, _LOG2E, type_), type_)
    n = k.op("v", f"math.roundeven {scaled} : {type_}")
    negative_n = k.op("v", f"arith.negf {n} : {type_}")
    r = fma(k, negative_n, const(k, _LN2_HI, type_), clamped, type_)
    r = fma(k, negative_n, const(k, _LN2_LO, type_), r, type_)
    p = polynomial(k, r, _EXP_TAYLOR, type_)
    # 2^n as 2^(n - floor(n/2)) · 2^floor(n/2): both halves are normal numbers.
    half = k.op("v", f"math.floor {binary(k, 'mulf', n, const(k, 0.5, type_), type_)} : {type_}")
    rest = binary(k, "subf", n, half, type_)
    result = binary(
        k, "mulf", binary(k, "mulf", p, _pow2(k, half, type_), type_), _pow2(k, rest, type_), type_
    )
    result = select(
        k,
        cmpf(k, "olt", x, const(k, _EXP_INPUT_MIN, type_), type_),
        const(k, 0.0, type_),
        result,
        type_,
    )
    result = select(
        k,
        cmpf(k, "ogt", x, const(k, _EXP_INPUT_MAX, type_), type_),
        const(k, math.inf, type_),
        result,
        type_,
    )
    return select(k, cmpf(k, "uno", x, x, type_), x, result, type_)


def tanh(k: Kernel, x: str, type_: str) -> str:
    """tanh(x) in f32 (see the module docstring for the method and its error)."""
    magnitude = k.op("v", f"math.absf {x} : {type_}")
    square = binary(k, "mulf", x, x, type_)
    small = binary(k, "mulf", x, polynomial(k, square, _TANH_POLY, type_), type_)
    e = exp(k, binary(k, "mulf", magnitude, const(k, -2.0, type_), type_), type_)
    one = const(k, 1.0, type_)
    large = binary(
        k, "divf", binary(k, "subf", one, e, type_), binary(k, "addf", one, e, type_), type_
    )
    large = k.op("v", f"math.copysign {large}, {x} : {type_}")
    is_small = cmpf(k, "olt", magnitude, const(k, _TANH_SMALL, type_), type_)
    return select(k, is_small, small, large, type_)


def softcap(k: Kernel, x: str, cap: float, type_: str) -> str:
    """cap·tanh(x / cap), as torch computes it (a true division, not a reciprocal multiply)."""
    inner = tanh(k, binary(k, "divf", x, const(k, cap, type_), type_), type_)
    return binary(k, "mulf", inner, const(k, cap, type_), type_)


def activation(k: Kernel, name: str, x: str, type_: str) -> str:
    """The gated MLP's activation in f32, following torch's formulas."""
    half_x = binary(k, "mulf", x, const(k, 0.5, type_), type_)
    one = const(k, 1.0, type_)
    if name == "gelu_tanh":
        cube = binary(k, "mulf", binary(k, "mulf", x, x, type_), x, type_)
        inner = fma(k, cube, const(k, 0.044715, type_), x, type_)
        t = tanh(k, binary(k, "mulf", inner, const(k, _SQRT_2_OVER_PI, type_), type_), type_)
        return binary(k, "mulf", half_x, binary(k, "addf", one, t, type_), type_)
    if name == "gelu":
        scaled = binary(k, "mulf", x, const(k, _INV_SQRT_2, type_), type_)
        erf = k.op("v", f"math.erf {scaled} : {type_}")
        return binary(k, "mulf", half_x, binary(k, "addf", one, erf, type_), type_)
    if name == "silu":
        negated = k.op("v", f"arith.negf {x} : {type_}")
        denominator = binary(k, "addf", one, exp(k, negated, type_), type_)
        return binary(k, "divf", x, denominator, type_)
    raise ValueError(f"unknown activation '{name}'")
