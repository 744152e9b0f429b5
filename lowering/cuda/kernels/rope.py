"""``tessera.rope.apply`` on CUDA: half-split rotary embedding of x [B, S, H, Dh].

The numerics are the CPU path's (``lowering/cpu/rope.py``) and transformers': inv_freq is
torch's own f32 table (``inverse_frequencies``, computed at build time and stored in the
module as a constant array), the angle is one f32 product pos·inv_freq[i], its cos and sin
come from libdevice (``cosf``/``sinf``, what torch's CUDA kernels call) rounded to x's dtype,
and ``x1·cos − x2·sin``, ``x2·cos + x1·sin`` round every product and the sum to x's dtype as
torch's ``q * cos + rotate_half(q) * sin`` does. Elements past ``rotary_dim`` are copied.

A thread owns one vector of pairs (``lanes`` elements of the first half and the matching ones
of the second half) of one token for a group of heads: it computes that vector's cos and sin
once, loads both halves of every head of its group, and only then stores, so y may alias x.
Threads beyond the pairs copy the pass-through tail (when ``rotary_dim < Dh``).

``build_rope_siblings`` rotates several tensors of the same positions (a decode step's q and
k) in one launch: the grid's blocks are each tensor's blocks one after another, and a block
runs its tensor's kernel body with its index offset (the first tensor's block count is a
launch argument, as it grows with B·S).
"""

from __future__ import annotations

import math as pymath
from array import array
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, math, memref, vector

from tessera.lowering.cpu.rope import inverse_frequencies

from ..kernel import KernelInfo, KernelModule, Param
from .rms_norm import (
    DTYPE_BYTES,
    FLOAT_DTYPES,
    constant,
    index,
    kernel_name,
    load_vector,
    narrow,
    store_vector,
    vector_lanes,
    vector_of,
    when,
    widen,
)

# Heads one thread rotates with the same cos/sin: fewer transcendental evaluations per byte
# (libdevice's sinf/cosf cost tens of instructions), while leaving enough threads for decode.
MAX_HEADS_PER_THREAD = 4
BLOCK = 128


@dataclass(frozen=True)
class RopeConfig:
    """Static facts of one RoPE kernel: x's dtype, heads H and head dim Dh, theta, the linear
    position scaling, the rotated leading part of Dh (default: all of it) and the positions'
    element type."""

    dtype: str
    heads: int
    head_dim: int
    theta: float
    scaling: float = 1.0
    rotary_dim: int | None = None
    pos_dtype: str = "i64"

    @property
    def rotary(self) -> int:
        return self.head_dim if self.rotary_dim is None else self.rotary_dim


@dataclass(frozen=True)
class RopeLayout:
    """Work of one token: ``groups`` head groups × (``pairs`` pair vectors + ``copies``
    pass-through vectors), a thread each."""

    pair_lanes: int
    pairs: int
    copy_lanes: int
    copies: int
    heads_per_thread: int
    groups: int

    @property
    def per_group(self) -> int:
        return self.pairs + self.copies

    @property
    def per_token(self) -> int:
        return self.groups * self.per_group


def rope_layout(cfg: RopeConfig) -> RopeLayout:
    size = DTYPE_BYTES[cfg.dtype]
    half = cfg.rotary // 2
    # Vectors start at multiples of their size: within a row (Dh) and at the second half.
    pair_lanes = vector_lanes(pymath.gcd(half, cfg.head_dim), size)
    tail = cfg.head_dim - cfg.rotary
    copy_lanes = vector_lanes(pymath.gcd(tail, cfg.rotary), size) if tail else 1
    heads = max(d for d in range(1, MAX_HEADS_PER_THREAD + 1) if cfg.heads % d == 0)
    return RopeLayout(
        pair_lanes=pair_lanes,
        pairs=half // pair_lanes,
        copy_lanes=copy_lanes,
        copies=tail // copy_lanes if tail else 0,
        heads_per_thread=heads,
        groups=cfg.heads // heads,
    )


def _check(cfg: RopeConfig) -> None:
    if cfg.dtype not in FLOAT_DTYPES:
        raise ValueError(f"rope takes bf16/f16/f32, got {cfg.dtype}")
    if cfg.pos_dtype not in ("i32", "i64"):
        raise ValueError(f"rope positions are i32 or i64, got {cfg.pos_dtype}")
    if cfg.rotary <= 0 or cfg.rotary % 2 or cfg.rotary > cfg.head_dim:
        raise ValueError(f"rotary_dim {cfg.rotary} must be even and within head dim {cfg.head_dim}")


def build_rope(km: KernelModule, cfg: RopeConfig) -> KernelInfo:
    """Adds the RoPE kernel for ``cfg`` to ``km`` (once) and says how to launch it.

    Params: ``x`` and ``y`` (B × S × H × Dh elements, contiguous), ``pos`` (B × S,
    ``cfg.pos_dtype``), ``B``, ``S`` (i32). Block 128; grid ``cdiv(B*S*per_token, 128)``, one
    thread per (token, head group, vector)."""
    _check(cfg)
    layout = rope_layout(cfg)
    readable = f"{cfg.dtype}_h{cfg.heads}_d{cfg.head_dim}_r{cfg.rotary}_{cfg.pos_dtype}"
    name = kernel_name("rope", readable, cfg)
    params = (
        Param.buffer("x", cfg.dtype),
        Param.buffer("pos", cfg.pos_dtype),
        Param.buffer("y", cfg.dtype),
        Param.scalar("B", "i32"),
        Param.scalar("S", "i32"),
    )
    grid = f"cdiv(B*S*{layout.per_token}, {BLOCK})"
    info = KernelInfo(name, params, (grid, "1", "1"), (BLOCK, 1, 1))
    if km.has_kernel(name):
        return info
    table = frequency_table(km, name, cfg, layout)
    _, entry = km.add_kernel(name, params)
    with ir.InsertionPoint(entry):
        block = arith.index_cast(ir.IntegerType.get_signless(32), gpu.block_id(gpu.Dimension.x))
        _emit_rope(cfg, layout, table, block, *entry.arguments)
        gpu.ReturnOp([])
    return info


def build_rope_siblings(km: KernelModule, cfgs: tuple[RopeConfig, RopeConfig]) -> KernelInfo:
    """Adds the kernel rotating two tensors of the same positions in one launch (see the
    module's docstring) and says how to launch it.

    Params: ``x0``, ``y0``, ``x1``, ``y1`` (as ``build_rope``'s x and y), ``pos``, ``B``,
    ``S``, and ``blocks0`` (i32: the first tensor's blocks, ``cdiv(B*S*per_token, 128)``)."""
    for cfg in cfgs:
        _check(cfg)
    if cfgs[0].pos_dtype != cfgs[1].pos_dtype:
        raise ValueError("sibling ropes read the same positions")
    layouts = [rope_layout(cfg) for cfg in cfgs]
    readable = "_".join(f"{cfg.dtype}_h{cfg.heads}_d{cfg.head_dim}_r{cfg.rotary}" for cfg in cfgs)
    name = kernel_name("rope2", f"{readable}_{cfgs[0].pos_dtype}", cfgs)
    params = (
        Param.buffer("x0", cfgs[0].dtype),
        Param.buffer("y0", cfgs[0].dtype),
        Param.buffer("x1", cfgs[1].dtype),
        Param.buffer("y1", cfgs[1].dtype),
        Param.buffer("pos", cfgs[0].pos_dtype),
        Param.scalar("B", "i32"),
        Param.scalar("S", "i32"),
        Param.scalar("blocks0", "i32"),
    )
    grids = [f"cdiv(B*S*{layout.per_token}, {BLOCK})" for layout in layouts]
    info = KernelInfo(name, params, (f"{grids[0]} + {grids[1]}", "1", "1"), (BLOCK, 1, 1))
    if km.has_kernel(name):
        return info
    tables = [
        frequency_table(km, f"{name}_{i}", cfg, lay)
        for i, (cfg, lay) in enumerate(zip(cfgs, layouts, strict=True))
    ]
    _, entry = km.add_kernel(name, params)
    x0, y0, x1, y1, pos, batch, length, blocks0 = entry.arguments
    with ir.InsertionPoint(entry):
        block = arith.index_cast(ir.IntegerType.get_signless(32), gpu.block_id(gpu.Dimension.x))
        first = arith.cmpi(arith.CmpIPredicate.ult, block, blocks0)
        when(
            first,
            lambda: _emit_rope(cfgs[0], layouts[0], tables[0], block, x0, pos, y0, batch, length),
        )
        second = arith.cmpi(arith.CmpIPredicate.uge, block, blocks0)
        when(
            second,
            lambda: _emit_rope(
                cfgs[1],
                layouts[1],
                tables[1],
                arith.subi(block, blocks0),
                x1,
                pos,
                y1,
                batch,
                length,
            ),
        )
        gpu.ReturnOp([])
    return info


def frequency_table(km: KernelModule, name: str, cfg: RopeConfig, layout: RopeLayout) -> str:
    """inv_freq as a constant global array of the module (one per kernel)."""
    values = inverse_frequencies(cfg.theta, cfg.rotary, cfg.scaling)
    table_type = ir.MemRefType.get([len(values)], ir.F32Type.get())
    tensor_type = ir.RankedTensorType.get([len(values)], ir.F32Type.get())
    symbol = f"{name}_inv_freq"
    with ir.InsertionPoint(km.body):
        memref.GlobalOp(
            symbol,
            ir.TypeAttr.get(table_type),
            sym_visibility="private",
            initial_value=ir.DenseFPElementsAttr.get(array("f", values), type=tensor_type),
            constant=True,
            alignment=16,
        )
    return symbol


def _emit_rope(
    cfg: RopeConfig,
    layout: RopeLayout,
    table_symbol: str,
    block: ir.Value,
    x: ir.Value,
    pos: ir.Value,
    y: ir.Value,
    batch: ir.Value,
    length: ir.Value,
) -> None:
    i32 = ir.IntegerType.get_signless(32)

    def const(value: int) -> ir.Value:
        return constant(i32, value)

    # Thread → (token, head group, vector) in 32-bit unsigned arithmetic (divisions by
    # constants become multiply-high); tokens = B·S must stay under 2³¹.
    tid = arith.index_cast(i32, gpu.thread_id(gpu.Dimension.x))
    item = arith.addi(arith.muli(block, const(BLOCK)), tid)
    slot = arith.remui(item, const(layout.per_group))
    rest = arith.divui(item, const(layout.per_group))
    group = arith.remui(rest, const(layout.groups))
    token = arith.divui(rest, const(layout.groups))
    tokens = arith.muli(batch, length)
    valid = arith.cmpi(arith.CmpIPredicate.ult, token, tokens)

    def as_index(value: ir.Value) -> ir.Value:
        return arith.index_castui(ir.IndexType.get(), value)

    head_dim = cfg.head_dim
    # First element of the group's first head: (token·H + group·heads_per_thread)·Dh.
    first_head = arith.addi(
        arith.muli(as_index(token), index(cfg.heads)),
        arith.muli(as_index(group), index(layout.heads_per_thread)),
    )
    base = arith.muli(first_head, index(head_dim))
    heads = range(layout.heads_per_thread)

    def rotate_pairs() -> None:
        lanes, dtype = layout.pair_lanes, cfg.dtype
        column = arith.muli(as_index(slot), index(lanes))
        position = memref.load(pos, [as_index(token)])
        cos, sin = rotation(cfg, table_symbol, column, lanes, position)
        half = cfg.rotary // 2
        offsets = [arith.addi(base, arith.addi(column, index(h * head_dim))) for h in heads]
        seconds = [arith.addi(offset, index(half)) for offset in offsets]
        x1s = [widen(load_vector(x, o, lanes, dtype), dtype) for o in offsets]
        x2s = [widen(load_vector(x, o, lanes, dtype), dtype) for o in seconds]
        for x1, x2, first, second in zip(x1s, x2s, offsets, seconds, strict=True):
            out1, out2 = rotate(x1, x2, cos, sin, dtype)
            store_vector(out1, y, first, dtype)
            store_vector(out2, y, second, dtype)

    def copy() -> None:
        lanes = layout.copy_lanes
        which = arith.subi(as_index(slot), index(layout.pairs))
        column = arith.addi(index(cfg.rotary), arith.muli(which, index(lanes)))
        offsets = [arith.addi(base, arith.addi(column, index(h * head_dim))) for h in heads]
        values = [load_vector(x, o, lanes, cfg.dtype) for o in offsets]
        for value, offset in zip(values, offsets, strict=True):
            store_vector(value, y, offset, cfg.dtype)

    if not layout.copies:
        when(valid, rotate_pairs)
        return
    is_pair = arith.cmpi(arith.CmpIPredicate.ult, slot, const(layout.pairs))
    when(arith.andi(valid, is_pair), rotate_pairs)
    is_copy = arith.cmpi(arith.CmpIPredicate.uge, slot, const(layout.pairs))
    when(arith.andi(valid, is_copy), copy)


def rotation(
    cfg: RopeConfig, table_symbol: str, column: ir.Value, lanes: int, position: ir.Value
) -> tuple[ir.Value, ir.Value]:
    """cos and sin (f32 vectors of ``lanes``, rounded through the dtype) of the angles
    position·inv_freq[column + i] (``position``: the token's integer position)."""
    angle_base = arith.sitofp(ir.F32Type.get(), position)
    table = memref.get_global(ir.MemRefType.get([cfg.rotary // 2], ir.F32Type.get()), table_symbol)
    frequencies = load_vector(table, column, lanes, "f32")
    angle = arith.mulf(frequencies, vector.broadcast(vector_of(lanes, "f32"), angle_base))
    return _through(math.cos(angle), cfg.dtype), _through(math.sin(angle), cfg.dtype)


def rotate(
    x1: ir.Value, x2: ir.Value, cos: ir.Value, sin: ir.Value, dtype: str
) -> tuple[ir.Value, ir.Value]:
    """The rotated pair (``x1·cos − x2·sin``, ``x2·cos + x1·sin``) of f32 vectors, each product
    and sum rounded to ``dtype`` as torch computes it; returned in ``dtype``."""

    def product(a: ir.Value, b: ir.Value) -> ir.Value:
        return _through(arith.mulf(a, b), dtype)

    out1 = arith.subf(product(x1, cos), product(x2, sin))
    out2 = arith.addf(product(x2, cos), product(x1, sin))
    return narrow(out1, dtype), narrow(out2, dtype)


def _through(value: ir.Value, dtype: str) -> ir.Value:
    """An f32 vector rounded to ``dtype`` and widened back: what torch holds after an op whose
    result is stored in ``dtype``."""
    return widen(narrow(value, dtype), dtype)
