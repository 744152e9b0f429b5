"""Small typed builders the attention kernels are written with: integer and float arithmetic
that takes Python numbers where a constant is meant, warp shuffles, exp2, and the packed
two-element operands of the tensor-core instructions.

Everything here emits ops through the bindings' builders at the current insertion point and
location; nothing formats IR text. Integers are ``index`` (addresses: 64-bit after lowering, so
that offsets into large buffers cannot wrap) or ``i32`` (positions compared in masks: 32-bit
arithmetic is cheaper and sequence lengths are i32 parameters anyway).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, llvm, nvvm, scf, vector
from mlir.dialects import math as mmath

Operand = ir.Value | int | float


def index_type() -> ir.Type:
    return ir.IndexType.get()


def i32_type() -> ir.Type:
    return ir.IntegerType.get_signless(32)


def f32_type() -> ir.Type:
    return ir.F32Type.get()


def const(value: int | float, type_: ir.Type) -> ir.Value:
    """``arith.constant`` through the bindings' wrapper (whose signature the generated stubs
    that mypy reads do not show)."""
    number = float(value) if isinstance(type_, ir.FloatType) else int(value)
    return arith.constant(type_, number)  # type: ignore[call-arg]


def idx(value: int) -> ir.Value:
    return const(value, index_type())


def i32(value: int) -> ir.Value:
    return const(value, i32_type())


def f32(value: float) -> ir.Value:
    return const(value, f32_type())


def if_op(condition: ir.Value, results: list[ir.Type] | None = None) -> scf.IfOp:
    """``scf.if`` (with an else region when it has results), through the bindings' wrapper."""
    if results:
        return scf.IfOp(condition, results, has_else=True)  # type: ignore[call-arg]
    return scf.IfOp(condition)  # type: ignore[call-arg]


def for_op(first: ir.Value, end: ir.Value, carried: list[ir.Value], step: int = 1) -> scf.ForOp:
    """``scf.for`` from ``first`` to ``end`` by ``step``, through the bindings' wrapper."""
    return scf.ForOp(first, end, idx(step), carried)  # type: ignore[call-arg]


def bit_width(type_: ir.Type) -> int:
    width = getattr(type_, "width", None)
    if not isinstance(width, int):
        raise TypeError(f"{type_} has no bit width")
    return width


def _pair(a: Operand, b: Operand) -> tuple[ir.Value, ir.Value]:
    """Both operands as values; a Python number takes the other operand's type."""
    if isinstance(a, ir.Value) and not isinstance(b, ir.Value):
        return a, const(b, a.type)
    if isinstance(b, ir.Value) and not isinstance(a, ir.Value):
        return const(a, b.type), b
    if not isinstance(a, ir.Value) or not isinstance(b, ir.Value):
        raise TypeError("at least one operand must be an IR value")
    return a, b


def add(a: Operand, b: Operand) -> ir.Value:
    if isinstance(b, int) and b == 0 and isinstance(a, ir.Value):
        return a
    x, y = _pair(a, b)
    return arith.addi(x, y)


def sub(a: Operand, b: Operand) -> ir.Value:
    if isinstance(b, int) and b == 0 and isinstance(a, ir.Value):
        return a
    x, y = _pair(a, b)
    return arith.subi(x, y)


def mul(a: Operand, b: Operand) -> ir.Value:
    if isinstance(b, int) and b == 1 and isinstance(a, ir.Value):
        return a
    x, y = _pair(a, b)
    return arith.muli(x, y)


def div(a: Operand, b: Operand) -> ir.Value:
    """Division of non-negative integers (unsigned: a shift for powers of two)."""
    x, y = _pair(a, b)
    return arith.divui(x, y)


def rem(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.remui(x, y)


def floordiv(a: Operand, b: Operand) -> ir.Value:
    """Signed floor division (of a possibly negative position)."""
    x, y = _pair(a, b)
    return arith.floordivsi(x, y)


def ceildiv(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.ceildivsi(x, y)


def smin(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.minsi(x, y)


def smax(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.maxsi(x, y)


def cmp(predicate: str, a: Operand, b: Operand) -> ir.Value:
    """Signed integer comparison: ``predicate`` is one of slt, sle, sgt, sge, eq, ne."""
    x, y = _pair(a, b)
    return arith.cmpi(getattr(arith.CmpIPredicate, predicate), x, y)


def both(a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.andi(a, b)


def either(a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.ori(a, b)


def select(condition: ir.Value, a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.select(condition, x, y)


def to_index(value: ir.Value) -> ir.Value:
    if isinstance(value.type, ir.IndexType):
        return value
    return arith.index_cast(index_type(), value)


def to_i32(value: ir.Value) -> ir.Value:
    if isinstance(value.type, ir.IndexType):
        return arith.index_cast(i32_type(), value)
    if ir.IntegerType(value.type).width == 32:
        return value
    return arith.trunci(i32_type(), value)


def opaque(value: ir.Value) -> ir.Value:
    """``value``, through a register move the compiler cannot see through: an address
    computed from it inside a loop stays in the loop as one add and immediate offsets,
    instead of LLVM hoisting every (loop-invariant) offset address into a register of its
    own for the whole loop, which a D=256 kernel cannot afford."""
    i64 = ir.IntegerType.get_signless(64)
    wide = arith.index_cast(i64, value)
    moved = llvm.inline_asm(i64, [wide], "mov.b64 $0, $1;", "=l,l", has_side_effects=True)
    return arith.index_cast(index_type(), moved)


# ---------------------------------------------------------------------------------------------
# f32


def fadd(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.addf(x, y)


def fsub(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.subf(x, y)


def fmul(a: Operand, b: Operand) -> ir.Value:
    if isinstance(b, float) and b == 1.0 and isinstance(a, ir.Value):
        return a
    x, y = _pair(a, b)
    return arith.mulf(x, y)


def fma(a: ir.Value, b: Operand, c: Operand) -> ir.Value:
    """a·b + c in one rounding (fma.rn.f32)."""
    y = b if isinstance(b, ir.Value) else const(b, a.type)
    z = c if isinstance(c, ir.Value) else const(c, a.type)
    return mmath.fma(a, y, z)


def fmax(a: Operand, b: Operand) -> ir.Value:
    """max that ignores NaN (max.f32): the running maxima here never hold NaN, and -inf
    compares as the smallest value, as the masked scores need."""
    x, y = _pair(a, b)
    return arith.maxnumf(x, y)


def fcmp(predicate: str, a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.cmpf(getattr(arith.CmpFPredicate, predicate.upper()), x, y)


def fdiv(a: Operand, b: Operand) -> ir.Value:
    x, y = _pair(a, b)
    return arith.divf(x, y)


def exp2(value: ir.Value, fast: bool) -> ir.Value:
    """2^x: one ex2.approx.ftz (about 2 ulp; results below 2^-126 flush to 0, which no
    softmax weight notices; 2^-inf = 0) when ``fast``, else libdevice's exp2f."""
    if fast:
        return llvm.call_intrinsic(f32_type(), "llvm.nvvm.ex2.approx.ftz.f", [value], [], [])
    return mmath.exp2(value)


def tanh(value: ir.Value) -> ir.Value:
    """libdevice's tanhf (a few ulp)."""
    return mmath.tanh(value)


def fast_tanh(value: ir.Value, prescale: float) -> ir.Value:
    """tanh(prescale · x) as 1 - 2 / (2^(2·log2(e)·|prescale·x|) + 1) with the sign of x:
    two MUFU ops (ex2, rcp) and four others, against about twenty for libdevice's tanhf. Its
    error is absolute, about 1e-7 (no cancellation worse than that near 0), so c·tanh keeps
    scores accurate to about c·1e-7; tanh.approx would be 2^-11 relative."""
    scale = 2.0 * abs(prescale) / math.log(2.0)
    power = exp2(fmul(mmath.absf(value), scale), fast=True)
    reciprocal = nvvm.rcp_approx_ftz_f(f32_type(), fadd(power, 1.0))
    magnitude = fma(reciprocal, -2.0, 1.0)
    return mmath.copysign(magnitude, value)


def tree(values: list[ir.Value], combine: Callable[[ir.Value, ir.Value], ir.Value]) -> ir.Value:
    """Combines ``values`` pairwise (depth log2(n) instead of a chain of n - 1)."""
    level = list(values)
    while len(level) > 1:
        paired = [combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def shuffle_xor(value: ir.Value, mask: int) -> ir.Value:
    """The value of lane ``lane ^ mask`` (shfl.sync.bfly over the full warp)."""
    return nvvm.shfl_sync(value.type, i32(-1), value, i32(mask), i32(31), nvvm.ShflKind.bfly)


# ---------------------------------------------------------------------------------------------
# Packed 16-bit pairs: the operand registers of mma.sync


def half_type(dtype: str) -> ir.Type:
    return ir.BF16Type.get() if dtype == "bf16" else ir.F16Type.get()


def pack_f32x2(dtype: str, low: ir.Value, high: ir.Value) -> ir.Value:
    """Two f32 rounded (to nearest even) into one packed operand, ``low`` in the low half (the
    lower column), as one cvt.rn.{bf16,f16}x2.f32."""
    pair = ir.VectorType.get([2], half_type(dtype))
    rounding = ir.Attribute.parse("#nvvm.fp_rnd_mode<rn>")
    if dtype == "bf16":
        packed = nvvm.convert_f32x2_to_bf16x2(pair, high, low, rnd=rounding)
    else:
        packed = nvvm.convert_f32x2_to_f16x2(pair, high, low, rnd=rounding)
    return as_operand(dtype, packed)


def as_operand(dtype: str, pair: ir.Value) -> ir.Value:
    """A ``vector<2xT>`` as mma.sync takes it: an i32 for bf16 (the bindings' nvvm.mma.sync
    deduces no PTX type from bf16 vectors), the vector itself for f16."""
    if dtype != "bf16":
        return pair
    word = vector.bitcast(ir.VectorType.get([1], i32_type()), pair)
    return vector.extract(word, [], [0])


def split_fragments(dtype: str, loaded: ir.Value, count: int) -> list[ir.Value]:
    """The ``count`` operands of an ldmatrix result ``vector<count x 2 x T>``."""
    if dtype == "bf16":
        words = vector.bitcast(ir.VectorType.get([count, 1], i32_type()), loaded)
        return [vector.extract(words, [], [j, 0]) for j in range(count)]
    return [vector.extract(loaded, [], [j]) for j in range(count)]
