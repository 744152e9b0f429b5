"""The GEMM epilogue, shared by every kernel family: from f32 accumulators to the stored
value (bias, gated activation, softcap, one rounding to the output dtype).

Transcendentals use the math dialect (tanh, erf, exp), which the NVVM lowering turns into
libdevice calls: accurate to a few f32 ulp, so f32 outputs stay within 1e-6 relative.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, math, memref, scf, vector

from .gemm import GemmConfig, GemmTile
from .gemm_ir import Ix, element, f32, f32_const, if_op

SQRT_2_OVER_PI = pymath.sqrt(2.0 / pymath.pi)
GELU_TANH_CUBIC = 0.044715
INV_SQRT_2 = 1.0 / pymath.sqrt(2.0)


def activation(kind: str, x: ir.Value) -> ir.Value:
    """``kind`` applied to the f32 value ``x``, as torch computes it."""
    half = f32_const(0.5)
    one = f32_const(1.0)
    if kind == "gelu_tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), torch's approximate="tanh"
        cube = arith.mulf(arith.mulf(x, x), x)
        inner = arith.addf(x, arith.mulf(f32_const(GELU_TANH_CUBIC), cube))
        t = math.tanh(arith.mulf(f32_const(SQRT_2_OVER_PI), inner))
        return arith.mulf(arith.mulf(half, x), arith.addf(one, t))
    if kind == "gelu":
        e = math.erf(arith.mulf(x, f32_const(INV_SQRT_2)))
        return arith.mulf(arith.mulf(half, x), arith.addf(one, e))
    if kind == "silu":
        # x / (1 + exp(-x)); exp overflows to inf for very negative x, giving -0 as torch does
        return arith.divf(x, arith.addf(one, math.exp(arith.negf(x))))
    raise ValueError(f"unknown activation {kind!r}")


def finish(
    cfg: GemmConfig, acc: ir.Value, up: ir.Value | None = None, bias: ir.Value | None = None
) -> ir.Value:
    """The f32 output value from the accumulator ``acc`` (and ``up``, the second
    accumulator of the gated form, and ``bias``, already f32)."""
    value = acc
    if cfg.gated:
        assert up is not None
        value = arith.mulf(activation(cfg.activation, acc), up)
    elif bias is not None:
        value = arith.addf(value, bias)
    if cfg.softcap is not None:
        cap = f32_const(float(cfg.softcap))
        value = arith.mulf(cap, math.tanh(arith.divf(value, cap)))
    return value


def to_dtype(value: ir.Value, dtype: str) -> ir.Value:
    """Rounds an f32 (scalar or vector) value to ``dtype`` (nearest even)."""
    if dtype == "f32":
        return value
    if isinstance(value.type, ir.VectorType):
        target: ir.Type = ir.VectorType.get(value.type.shape, element(dtype))
    else:
        target = element(dtype)
    return arith.truncf(target, value)


def load_f32(buffer: ir.Value, at: ir.Value, dtype: str) -> ir.Value:
    """One element of a global buffer, as f32."""
    value = memref.load(buffer, [at])
    return value if dtype == "f32" else arith.extf(f32(), value)


def store_values(buffer: ir.Value, at: ir.Value, values: list[ir.Value], dtype: str) -> None:
    """Stores f32 ``values`` rounded to ``dtype`` at ``buffer[at:at+len(values)]`` as one
    vector store; ``at`` must be a multiple of ``len(values)`` (so the store is aligned)."""
    if len(values) == 1:
        memref.store(to_dtype(values[0], dtype), buffer, [at])
        return
    packed = vector.from_elements(ir.VectorType.get([len(values)], f32()), values)
    rounded = to_dtype(packed, dtype)
    width = len(values) * (4 if dtype == "f32" else 2)
    vector.store(rounded, buffer, [at], alignment=width)


def store_tile(
    ix: Ix,
    origin: tuple[ir.Value, ir.Value],
    rows: ir.Value,
    cfg: GemmConfig,
    tile: GemmTile,
    stores: Callable[[bool], None],
) -> None:
    """A block's stores of its output tile: unguarded where the whole tile (origin m0, n0)
    lies inside the M x N output, each store guarded otherwise (``stores(guarded)``)."""
    m0, n0 = origin
    inside = ix.lt(ix.add(m0, tile.block_m - 1), rows)
    if cfg.N % tile.block_n:
        inside = arith.andi(inside, ix.lt(ix.add(n0, tile.block_n - 1), cfg.N))
    branch = if_op(inside, has_else=True)
    with ir.InsertionPoint(branch.then_block):
        stores(False)
        scf.YieldOp([])
    with ir.InsertionPoint(branch.else_block):
        stores(True)
        scf.YieldOp([])
