"""tessera-rocm-expand-math: the math ops of AMD kernels without the ROCm device libraries.

MLIR lowers ``math.exp``, ``math.sin``, ``math.tanh``... on ROCDL to calls of ocml, the ROCm
device library, which this toolchain does not ship (nor link). This pass rewrites them, in
f32 (16-bit values are widened first and the result rounded once), into arithmetic and the
LLVM intrinsics the AMDGPU backend expands itself:

- ``exp2``, ``log2``, ``sqrt``: ``llvm.exp2``, ``llvm.log2``, ``llvm.sqrt`` (the backend's
  expansions handle denormals and are correctly rounded for sqrt, about 1 ulp otherwise);
  ``rsqrt`` = 1 / sqrt (a correctly rounded division); ``log`` = log2(x) · ln 2.
- ``exp``: 2^(x·log2 e) with x·log2 e split into a head and a tail (fma) so the product's
  rounding does not grow with |x|: 2^head · (1 + tail · ln 2), about 2 ulp; overflow gives
  +inf, -inf gives 0, NaN stays NaN.
- ``tanh``: for |x| < 0.55 the odd polynomial x·P(x²) of the CPU lowering (``vector_math``),
  else (1 - e)/(1 + e) with e = exp(-2|x|), with x's sign (a few ulp).
- ``sin``, ``cos``: Cody-Waite reduction by π/2 in three parts with fma (exact for |x| up to
  about 10⁵, where rope's angles live), then the Cephes minimax polynomials on [-π/4, π/4]
  and the quadrant's sign and swap (a few ulp; torch's CUDA kernels call libdevice, also a
  few ulp).

- ``erf`` (the exact GELU): odd in x; for |x| < 1, |x|·P(x²); for 1 ≤ |x| < 4,
  1 − e^(−x²)·Q(1/|x|), Q fitting erfc(a)·e^(a²); beyond, 1 (erfc(4) is below half an ulp
  of 1). P (degree 6) and Q (degree 9) are least-squares fits in float64 on those intervals;
  evaluated in f32 the result is within about 3 ulp. NaN stays NaN.

What remains is left to ``math-polynomial-approximation`` in the lowering pipeline; a
device-library call that still survives is refused by ``toolchain``.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, llvm, math

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

_LOG2E = 1.4426950408889634
_LOG2E_HI = float.fromhex("0x1.715476p+0")  # log2(e) rounded to f32
_LOG2E_LO = _LOG2E - _LOG2E_HI
_LN2 = pymath.log(2.0)
_TANH_SMALL = 0.55
_TANH_POLY = (
    1.0,
    -0.33333319425582886,
    0.1333261877298355,
    -0.05385589227080345,
    0.021087009459733963,
    -0.006296433974057436,
)
# π/2 in three parts: the first two have few significant bits, so j·part is exact for
# |j| < 2^15 and the reduction loses nothing until |x| ≈ 5·10⁴ (f32 then spaces values 0.004
# apart, and the angle itself carries that error).
_PIO2 = (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8)
_TWO_OVER_PI = 2.0 / pymath.pi
_SIN_POLY = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
_COS_POLY = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)
# erf(a) / a as a polynomial in a² on [0, 1], and erfc(a)·e^(a²) as one in 1/a on [1, 4].
_ERF_SMALL = (
    1.1283791662326554,
    -0.3761262976711667,
    0.11283634634509568,
    -0.026856069574711764,
    0.00519295787741334,
    -0.0008053751199829318,
    8.006874391108565e-05,
)
_ERFC_SCALED = (
    0.00013050893515769826,
    0.56160884479326,
    0.02168639513912152,
    -0.3805414620197062,
    0.24218460061543723,
    0.21923752096231627,
    -0.5170658080776301,
    0.4254124231347438,
    -0.17506367121573466,
    0.029994240373496774,
)
_FLOATS = ("f32", "bf16", "f16")


class _Builder:
    """Arithmetic on f32 scalars or vectors of f32, with constants of the right shape."""

    def __init__(self, type_: ir.Type) -> None:
        self.type = type_
        self.lanes = ir.VectorType(type_).shape[0] if isinstance(type_, ir.VectorType) else 0
        i32 = ir.IntegerType.get_signless(32)
        self.int_type = ir.VectorType.get([self.lanes], i32) if self.lanes else i32

    def const(self, value: float) -> ir.Value:
        if not self.lanes:
            return arith.constant(self.type, value)  # type: ignore[call-arg]
        attr = ir.FloatAttr.get(ir.F32Type.get(), value)
        return arith.constant(self.type, ir.DenseElementsAttr.get_splat(self.type, attr))  # type: ignore[call-arg]

    def int_const(self, value: int) -> ir.Value:
        if not self.lanes:
            return arith.constant(self.int_type, value)  # type: ignore[call-arg]
        attr = ir.IntegerAttr.get(ir.IntegerType.get_signless(32), value)
        return arith.constant(self.int_type, ir.DenseElementsAttr.get_splat(self.int_type, attr))  # type: ignore[call-arg]

    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        suffix = f"v{self.lanes}f32" if self.lanes else "f32"
        return llvm.call_intrinsic(self.type, f"llvm.{name}.{suffix}", list(args), [], [])

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return math.fma(a, b, c)

    def poly(self, x: ir.Value, coefficients: tuple[float, ...]) -> ir.Value:
        """Σ c_i x^i by Horner's rule (c_0 first)."""
        result = self.const(coefficients[-1])
        for c in reversed(coefficients[:-1]):
            result = self.fma(result, x, self.const(c))
        return result

    def less(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return arith.cmpf(arith.CmpFPredicate.OLT, a, b)


def exp2(b: _Builder, x: ir.Value) -> ir.Value:
    return b.intrinsic("exp2", x)


def log2(b: _Builder, x: ir.Value) -> ir.Value:
    return b.intrinsic("log2", x)


def sqrt(b: _Builder, x: ir.Value) -> ir.Value:
    return b.intrinsic("sqrt", x)


def rsqrt(b: _Builder, x: ir.Value) -> ir.Value:
    return arith.divf(b.const(1.0), sqrt(b, x))


def log(b: _Builder, x: ir.Value) -> ir.Value:
    return arith.mulf(log2(b, x), b.const(_LN2))


def exp(b: _Builder, x: ir.Value) -> ir.Value:
    head = arith.mulf(x, b.const(_LOG2E_HI))
    tail = b.fma(x, b.const(_LOG2E_HI), arith.negf(head))
    tail = b.fma(x, b.const(_LOG2E_LO), tail)
    # ±inf or NaN heads make the tail NaN; 2^head alone is then the answer.
    finite = b.less(math.absf(head), b.const(pymath.inf))
    tail = arith.select(finite, tail, b.const(0.0))
    power = exp2(b, head)
    refined = b.fma(arith.mulf(power, tail), b.const(_LN2), power)
    overflow = arith.cmpf(arith.CmpFPredicate.OEQ, power, b.const(pymath.inf))
    return arith.select(overflow, power, refined)


def tanh(b: _Builder, x: ir.Value) -> ir.Value:
    magnitude = math.absf(x)
    square = arith.mulf(x, x)
    small = arith.mulf(x, b.poly(square, _TANH_POLY))
    e = exp(b, arith.mulf(magnitude, b.const(-2.0)))
    large = arith.divf(arith.subf(b.const(1.0), e), arith.addf(b.const(1.0), e))
    large = math.copysign(large, x)
    return arith.select(b.less(magnitude, b.const(_TANH_SMALL)), small, large)


def _reduce(b: _Builder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(y, q): x = j·π/2 + y with |y| ≤ π/4 and q = j mod 4 (as i32)."""
    j = math.roundeven(arith.mulf(x, b.const(_TWO_OVER_PI)))
    y = x
    for part in _PIO2:
        y = b.fma(arith.negf(j), b.const(part), y)
    quadrant = arith.andi(arith.fptosi(b.int_type, j), b.int_const(3))
    return y, quadrant


def _sin_cos_poly(b: _Builder, y: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(sin y, cos y) for |y| ≤ π/4: y + y·z·S(z) and 1 - z/2 + z²·C(z), z = y²."""
    z = arith.mulf(y, y)
    s = b.fma(arith.mulf(y, z), b.poly(z, _SIN_POLY), y)
    c = b.fma(arith.mulf(z, z), b.poly(z, _COS_POLY), b.fma(z, b.const(-0.5), b.const(1.0)))
    return s, c


def _quadrant(b: _Builder, x: ir.Value, shift: int) -> ir.Value:
    y, quadrant = _reduce(b, x)
    s, c = _sin_cos_poly(b, y)
    q = arith.andi(arith.addi(quadrant, b.int_const(shift)), b.int_const(3))
    # sin: q 0 → s, 1 → c, 2 → -s, 3 → -c (cos is sin shifted by one quadrant).
    odd = arith.cmpi(arith.CmpIPredicate.ne, arith.andi(q, b.int_const(1)), b.int_const(0))
    negative = arith.cmpi(arith.CmpIPredicate.ne, arith.andi(q, b.int_const(2)), b.int_const(0))
    value = arith.select(odd, c, s)
    return arith.select(negative, arith.negf(value), value)


def sin(b: _Builder, x: ir.Value) -> ir.Value:
    return _quadrant(b, x, 0)


def cos(b: _Builder, x: ir.Value) -> ir.Value:
    return _quadrant(b, x, 1)


def erf(b: _Builder, x: ir.Value) -> ir.Value:
    magnitude = math.absf(x)
    square = arith.mulf(x, x)
    small = arith.mulf(magnitude, b.poly(square, _ERF_SMALL))
    inverse = arith.divf(b.const(1.0), magnitude)
    tail = arith.mulf(exp(b, arith.negf(square)), b.poly(inverse, _ERFC_SCALED))
    middle = arith.subf(b.const(1.0), tail)
    # Unordered-or-less: NaN takes the polynomial branch and stays NaN.
    below_one = arith.cmpf(arith.CmpFPredicate.ULT, magnitude, b.const(1.0))
    large = arith.select(b.less(magnitude, b.const(4.0)), middle, b.const(1.0))
    return math.copysign(arith.select(below_one, small, large), x)


EXPANSIONS: dict[str, Callable[[_Builder, ir.Value], ir.Value]] = {
    "math.exp": exp,
    "math.exp2": exp2,
    "math.log": log,
    "math.log2": log2,
    "math.sqrt": sqrt,
    "math.rsqrt": rsqrt,
    "math.tanh": tanh,
    "math.sin": sin,
    "math.cos": cos,
    "math.erf": erf,
}


def _element(type_: ir.Type) -> str | None:
    if isinstance(type_, ir.VectorType):
        if type_.rank != 1:
            return None
        text = str(type_.element_type)
    else:
        text = str(type_)
    return text if text in _FLOATS else None


def expand(op: ir.Operation) -> None:
    """Replaces the math op ``op`` (one of ``EXPANSIONS``, on f32/bf16/f16 scalars or 1-d
    vectors) by its expansion."""
    type_ = op.results[0].type
    element = _element(type_)
    if element is None:
        return
    with op.context, ir.InsertionPoint(op), op.location:
        wide: ir.Type = ir.F32Type.get()
        if isinstance(type_, ir.VectorType):
            wide = ir.VectorType.get(type_.shape, ir.F32Type.get())
        x = op.operands[0]
        if element != "f32":
            x = arith.extf(wide, x)
        value = EXPANSIONS[op.name](_Builder(wide), x)
        if element != "f32":
            value = arith.truncf(type_, value)
    op.results[0].replace_all_uses_with(value)
    op.erase()


@register_pass("tessera-rocm-expand-math")
def expand_math(module: ir.Operation, options: NoOptions) -> None:
    """Replace math.exp/exp2/log/log2/sqrt/rsqrt/tanh/sin/cos/erf on f32/bf16/f16 by arithmetic
    and LLVM intrinsics the AMDGPU backend expands itself (no ROCm device library calls)."""
    for op in walk_ops(module):
        if op.name in EXPANSIONS:
            expand(op)
