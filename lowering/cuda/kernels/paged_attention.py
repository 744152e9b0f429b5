"""``tessera.attention.paged`` on the GPU: attention of new queries over a paged KV cache, split
over the keys so that a decode step at batch 1 still fills the card (split-KV, as
FlashDecoding does), then a combine kernel that merges the splits.

The partial kernel runs one block per (batch, kv head, query token, split) with one warp per
query head of that kv head's group, so the group's warps read the same key and value rows (a
GQA group shares each K/V load through L1). A warp walks the keys its query may see within
its split (the bounds come from the cache index, the first valid key and the window, so no
score is masked), each key's row found through the block table: key j of sequence b lives in
slot j mod BS of block ``block_table[b, (j / BS) mod M]``. Scores, the online softmax and the
accumulator are f32 as in the SIMT flash kernel (``attention_simt.py``, whose numerics this
follows: exact exp2, libdevice tanh for the softcap); the split writes its unnormalised
accumulator and its (max, sum) to f32 scratch.

The combine kernel runs one warp per (batch, query head, query token): the splits' maxima give
the row's maximum, each split is weighted by 2^(m_split − m), and the weighted sum divided by the
weighted total (zero when no key was visible) is rounded once to the output's dtype.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, memref, scf

from ..kernel import KernelInfo, KernelModule, Param
from . import attention_ir as a

WARP = 32
FLOAT_DTYPES = ("bf16", "f16", "f32")


@dataclass(frozen=True)
class PagedAttentionConfig:
    """Static facts of one paged attention: q [B, Hq, S, D] (strides given at launch), caches
    [N, Hkv, BS, D] and [N, Hkv, BS, Dv], tables of ``table_dtype``; ``keys_per_split`` keys of
    the cache index range go to one split (the split count is cdiv(M·BS, keys_per_split))."""

    dtype: str
    head_dim: int
    value_dim: int
    heads_q: int
    heads_kv: int
    block_size: int
    scale: float
    softcap: float | None = None
    window: int | None = None
    table_dtype: str = "i64"
    keys_per_split: int = 256

    def __post_init__(self) -> None:
        if self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"paged attention takes {FLOAT_DTYPES}, got {self.dtype}")
        if self.heads_kv <= 0 or self.heads_q % self.heads_kv:
            raise ValueError(f"query heads {self.heads_q} are not a multiple of {self.heads_kv}")
        if self.keys_per_split <= 0 or self.block_size <= 0:
            raise ValueError("keys_per_split and block_size must be positive")

    @property
    def group(self) -> int:
        return self.heads_q // self.heads_kv

    def tag(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:8]


def splits_expression(cfg: PagedAttentionConfig) -> str:
    """The number of splits as an expression over the table width ``M``."""
    return f"cdiv(M * {cfg.block_size}, {cfg.keys_per_split})"


def _params(cfg: PagedAttentionConfig) -> tuple[Param, ...]:
    strides = [Param.scalar(f"{t}_{s}", "i64") for t in ("q",) for s in ("sb", "sh", "ss")]
    return (
        Param.buffer("q", cfg.dtype),
        Param.buffer("k_cache", cfg.dtype),
        Param.buffer("v_cache", cfg.dtype),
        Param.buffer("block_table", cfg.table_dtype),
        Param.buffer("cache_index", "i64"),
        Param.buffer("kv_start", "i64"),
        Param.buffer("part_o", "f32"),
        Param.buffer("part_ml", "f32"),
        *strides,
        Param.scalar("B", "i64"),
        Param.scalar("S", "i64"),
        Param.scalar("M", "i64"),
    )


def _combine_params(cfg: PagedAttentionConfig) -> tuple[Param, ...]:
    return (
        Param.buffer("part_o", "f32"),
        Param.buffer("part_ml", "f32"),
        Param.buffer("o", cfg.dtype),
        *(Param.scalar(f"o_{s}", "i64") for s in ("sb", "sh", "ss")),
        Param.scalar("B", "i64"),
        Param.scalar("S", "i64"),
        Param.scalar("M", "i64"),
    )


def build_paged_attention(
    km: KernelModule, cfg: PagedAttentionConfig
) -> tuple[KernelInfo, KernelInfo]:
    """Adds the partial and the combine kernel (once per config); returns their launch
    contracts. Scratch: ``part_o`` holds splits·B·Hq·S·Dv f32 and ``part_ml`` splits·B·Hq·S·2
    (``scratch_elements``)."""
    tag = f"{cfg.dtype}_d{cfg.head_dim}_g{cfg.group}_{cfg.tag()}"
    partial_name, combine_name = f"tessera_paged_attention_{tag}", f"tessera_paged_combine_{tag}"
    splits = splits_expression(cfg)
    partial = KernelInfo(
        partial_name,
        _params(cfg),
        (f"B * S * {cfg.heads_kv}", splits, "1"),
        (cfg.group * WARP, 1, 1),
    )
    combine = KernelInfo(
        combine_name, _combine_params(cfg), (f"B * S * {cfg.heads_q}", "1", "1"), (WARP, 1, 1)
    )
    if not km.has_kernel(partial_name):
        _emit_partial(km, cfg, partial)
        _emit_combine(km, cfg, combine)
    return partial, combine


def scratch_elements(cfg: PagedAttentionConfig) -> tuple[str, str]:
    """Element counts of ``part_o`` and ``part_ml`` as expressions over B, S and M."""
    rows = f"{splits_expression(cfg)} * B * S * {cfg.heads_q}"
    return f"{rows} * {cfg.value_dim}", f"{rows} * 2"


def _widen(value: ir.Value) -> ir.Value:
    return value if isinstance(value.type, ir.F32Type) else arith.extf(a.f32_type(), value)


def _load_row(buffer: ir.Value, start: ir.Value, lane: ir.Value, dim: int) -> list[ir.Value]:
    """Elements lane, lane + 32, ... of a row as f32 (0 past ``dim``, the index kept inside)."""
    values = []
    for i in range(-(-dim // WARP)):
        d = a.add(lane, WARP * i)
        if WARP * (i + 1) <= dim:
            values.append(_widen(memref.load(buffer, [a.add(start, d)])))
            continue
        inside = a.cmp("slt", d, dim)
        value = _widen(memref.load(buffer, [a.add(start, a.select(inside, d, 0))]))
        values.append(a.select(inside, value, 0.0))
    return values


def _store_row(
    values: list[ir.Value], buffer: ir.Value, start: ir.Value, lane: ir.Value, dim: int
) -> None:
    """Stores lane's elements (lane, lane + 32, ...) of a row, rounded to the buffer's type."""
    element = ir.MemRefType(buffer.type).element_type
    for i, value in enumerate(values):
        d = a.add(lane, WARP * i)
        out = value if isinstance(element, ir.F32Type) else arith.truncf(element, value)
        if WARP * (i + 1) <= dim:
            memref.store(out, buffer, [a.add(start, d)])
            continue
        edge = a.if_op(a.cmp("slt", d, dim))
        with ir.InsertionPoint(edge.then_block):
            memref.store(out, buffer, [a.add(start, d)])
            scf.yield_([])


def _load_index(buffer: ir.Value, position: ir.Value) -> ir.Value:
    return a.to_index(memref.load(buffer, [position]))


def _emit_partial(km: KernelModule, cfg: PagedAttentionConfig, info: KernelInfo) -> None:
    args, block = km.add_launched_kernel(info)
    with ir.InsertionPoint(block):
        tid = gpu.thread_id(gpu.Dimension.x)
        lane, member = a.rem(tid, WARP), a.div(tid, WARP)
        seq_q, width = a.to_index(args["S"]), a.to_index(args["M"])
        batches = a.to_index(args["B"])
        # block x = (batch · S + token) · Hkv + kv head
        unit = gpu.block_id(gpu.Dimension.x)
        kv_head = a.rem(unit, cfg.heads_kv)
        token = a.rem(a.div(unit, cfg.heads_kv), seq_q)
        batch = a.div(a.div(unit, cfg.heads_kv), seq_q)
        split = gpu.block_id(gpu.Dimension.y)
        head = a.add(a.mul(kv_head, cfg.group), member)

        q_start = a.add(
            a.add(a.mul(batch, a.to_index(args["q_sb"])), a.mul(head, a.to_index(args["q_sh"]))),
            a.mul(token, a.to_index(args["q_ss"])),
        )
        q = _load_row(args["q"], q_start, lane, cfg.head_dim)
        position = a.add(_load_index(args["cache_index"], batch), token)
        first = _load_index(args["kv_start"], batch)
        if cfg.window is not None:
            first = a.smax(first, a.add(position, 1 - cfg.window))
        low = a.smax(first, a.mul(split, cfg.keys_per_split))
        high = a.smin(a.add(position, 1), a.mul(a.add(split, 1), cfg.keys_per_split))
        table_row = a.mul(batch, width)

        n_out = -(-cfg.value_dim // WARP)
        init = [a.f32(-math.inf), a.f32(0.0)] + [a.f32(0.0)] * n_out
        loop = a.for_op(low, a.smax(high, low), init)
        with ir.InsertionPoint(loop.body):
            key = loop.induction_variable
            m, total, *acc = loop.inner_iter_args
            page = a.rem(a.div(key, cfg.block_size), width)
            physical = _load_index(args["block_table"], a.add(table_row, page))
            slot = a.add(
                a.mul(a.add(a.mul(physical, cfg.heads_kv), kv_head), cfg.block_size),
                a.rem(key, cfg.block_size),
            )
            k = _load_row(args["k_cache"], a.mul(slot, cfg.head_dim), lane, cfg.head_dim)
            dot = a.fmul(q[0], k[0])
            for x, y in zip(q[1:], k[1:], strict=True):
                dot = a.fma(x, y, dot)
            for mask in (16, 8, 4, 2, 1):
                dot = a.fadd(dot, km.device.shuffle_xor(dot, mask))
            score = a.fmul(dot, cfg.scale)
            if cfg.softcap is not None:
                score = a.fmul(a.tanh(a.fmul(score, 1.0 / cfg.softcap)), cfg.softcap)
            x = a.fmul(score, 1.0 / math.log(2.0))
            m_new = a.fmax(m, x)
            alpha = a.exp2(a.fsub(m, m_new), fast=False)
            p = a.exp2(a.fsub(x, m_new), fast=False)
            v = _load_row(args["v_cache"], a.mul(slot, cfg.value_dim), lane, cfg.value_dim)
            acc = [a.fma(p, vi, a.fmul(o, alpha)) for o, vi in zip(acc, v, strict=True)]
            scf.yield_([m_new, a.fma(total, alpha, p), *acc])
        m, total, *acc = loop.results

        # Row (split, batch, head, token) of the scratch.
        row = a.add(
            a.mul(a.add(a.mul(a.add(a.mul(split, batches), batch), cfg.heads_q), head), seq_q),
            token,
        )
        _store_row(acc, args["part_o"], a.mul(row, cfg.value_dim), lane, cfg.value_dim)
        first_lane = a.if_op(a.cmp("eq", lane, 0))
        with ir.InsertionPoint(first_lane.then_block):
            memref.store(m, args["part_ml"], [a.mul(row, 2)])
            memref.store(total, args["part_ml"], [a.add(a.mul(row, 2), 1)])
            scf.yield_([])
        gpu.ReturnOp([])


def _emit_combine(km: KernelModule, cfg: PagedAttentionConfig, info: KernelInfo) -> None:
    args, block = km.add_launched_kernel(info)
    with ir.InsertionPoint(block):
        lane = gpu.thread_id(gpu.Dimension.x)
        seq_q, batches = a.to_index(args["S"]), a.to_index(args["B"])
        splits = a.ceildiv(a.mul(a.to_index(args["M"]), cfg.block_size), cfg.keys_per_split)
        # block x = (batch · Hq + head) · S + token, the scratch's row order within a split
        unit = gpu.block_id(gpu.Dimension.x)
        token = a.rem(unit, seq_q)
        head = a.rem(a.div(unit, seq_q), cfg.heads_q)
        batch = a.div(a.div(unit, seq_q), cfg.heads_q)
        split_rows = a.mul(a.mul(batches, cfg.heads_q), seq_q)

        peak = a.for_op(a.idx(0), splits, [a.f32(-math.inf)])
        with ir.InsertionPoint(peak.body):
            row = a.add(a.mul(peak.induction_variable, split_rows), unit)
            value = memref.load(args["part_ml"], [a.mul(row, 2)])
            scf.yield_([a.fmax(peak.inner_iter_args[0], value)])
        top = peak.results[0]
        # A row that saw no key keeps -inf everywhere; weigh from 0 so no NaN appears.
        top = a.select(a.fcmp("oeq", top, -math.inf), 0.0, top)

        n_out = -(-cfg.value_dim // WARP)
        merge = a.for_op(a.idx(0), splits, [a.f32(0.0)] * (1 + n_out))
        with ir.InsertionPoint(merge.body):
            row = a.add(a.mul(merge.induction_variable, split_rows), unit)
            total, *acc = merge.inner_iter_args
            m = memref.load(args["part_ml"], [a.mul(row, 2)])
            weight = a.exp2(a.fsub(m, top), fast=False)
            part_total = memref.load(args["part_ml"], [a.add(a.mul(row, 2), 1)])
            part = _load_row(args["part_o"], a.mul(row, cfg.value_dim), lane, cfg.value_dim)
            acc = [a.fma(weight, x, o) for o, x in zip(acc, part, strict=True)]
            scf.yield_([a.fma(weight, part_total, total), *acc])
        total, *acc = merge.results
        inverse = a.select(a.fcmp("ogt", total, 0.0), a.fdiv(1.0, total), 0.0)
        o_start = a.add(
            a.add(a.mul(batch, a.to_index(args["o_sb"])), a.mul(head, a.to_index(args["o_sh"]))),
            a.mul(token, a.to_index(args["o_ss"])),
        )
        _store_row([a.fmul(x, inverse) for x in acc], args["o"], o_start, lane, cfg.value_dim)
        gpu.ReturnOp([])
