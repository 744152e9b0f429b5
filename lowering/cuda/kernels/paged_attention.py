"""``tessera.attention.paged`` on the GPU: attention of new queries over a paged KV cache, split
over the keys so that a decode step at batch 1 still fills the card (split-KV, as
FlashDecoding does), then a combine kernel that merges the splits.

The partial kernel runs one block of ``warps`` warps per (batch, kv head, query token, split),
and per block of up to eight query heads of the kv head's group (a group of 16 takes two).
Every warp serves all the block's query heads, so a K/V row is read once for them, over its
own run of the split's keys, ``keys_per_step`` keys at a time: the step issues every key's
block-table lookup and K and V row loads before it uses any of them, so the loads of a step
are in flight together instead of one key's latency after another. A row is read by the whole
warp, each lane holding ``cdiv(D, 32)`` consecutive elements (one 16-byte load for D = 256 in
bf16). The keys a query sees run from its first visible key (the first valid one, or the
window's) to its own position; the splits count from that first key, so the M·BS keys a table
of M blocks holds fill at most its cdiv(M·BS, keys_per_split) splits even where the table is a
ring (a sliding layer's) and the position lies far beyond M·BS. No score is masked except the
padding of a warp's last step. Key j of sequence b lives in slot j mod BS of block
``block_table[b, (j / BS) mod M]``.

Scores, the online softmax and the accumulators are f32 as in the SIMT flash kernel
(``attention_simt.py``, whose numerics this follows: exact exp2, libdevice tanh for the
softcap). The warps' partial results merge through shared memory into one unnormalised
accumulator and one (max, sum) per query head, written to f32 scratch; a split that sees no
key writes only its (max, sum) = (-inf, 0).

The combine kernel runs one block of four warps per (batch, query head, query token): the
lanes of each warp find the row's maximum m over the splits together, then the warps take the
splits in turns, a few at a time (their loads in flight together; a split that saw no key is
not read), weighting each by 2^(m_split − m); the warps' sums add in shared memory, and the
weighted sum divided by the weighted total (zero when no key was visible) is rounded once to
the output's dtype.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, memref, scf, vector

from ..kernel import KernelInfo, KernelModule, Param
from . import attention_ir as a

WARP = 32
FLOAT_DTYPES = ("bf16", "f16", "f32")
# Static shared memory the warps' merge may take (the 48 KB a block gets without opting in,
# less room for the (max, sum) pairs).
MERGE_BYTES = 40 * 1024
# The combine's warps, and the splits each weighs per step (their loads in flight together).
COMBINE_WARPS = 4
COMBINE_STEP = 4
# Query heads one block serves at most, and the f32 registers a lane may give to queries,
# accumulators and a step's K and V rows: at D = 256 (8 elements a lane), 8 heads and a step
# of 2 keys take 160 and assemble without spilling on sm_90a; 4 keys spill.
MAX_BLOCK_HEADS = 8
STEP_REGISTERS = 160


@dataclass(frozen=True)
class PagedAttentionConfig:
    """Static facts of one paged attention: q [B, Hq, S, D] (strides given at launch), caches
    [N, Hkv, BS, D] and [N, Hkv, BS, Dv], tables of ``table_dtype``; ``keys_per_split`` keys of
    the cache index range go to one split (the split count is cdiv(M·BS, keys_per_split)),
    shared by ``warps`` warps that each take ``keys_per_step`` keys per step."""

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
    keys_per_split: int = 64
    warps: int = 4
    keys_per_step: int | None = None
    # Whether a warp looks its next step's cache blocks up while it works on the current step
    # (the latency-bound batch-1 layout of one kv head: ``single_sequence_layout``); it takes a
    # register a key of a step, which spilled in the 8-warp batch-1 layout of four kv heads.
    pages_ahead: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"paged attention takes {FLOAT_DTYPES}, got {self.dtype}")
        if self.heads_kv <= 0 or self.heads_q % self.heads_kv:
            raise ValueError(f"query heads {self.heads_q} are not a multiple of {self.heads_kv}")
        for name in ("keys_per_split", "block_size", "warps", "keys_per_step"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def group(self) -> int:
        return self.heads_q // self.heads_kv

    @property
    def block_heads(self) -> int:
        """Query heads of one block: the whole group up to ``MAX_BLOCK_HEADS`` (each head
        keeps its query and accumulator in every lane's registers), else the largest divisor
        of the group below that, the group's heads then spread over several blocks."""
        return max(h for h in range(1, MAX_BLOCK_HEADS + 1) if self.group % h == 0)

    @property
    def head_blocks(self) -> int:
        return self.group // self.block_heads

    @property
    def block_warps(self) -> int:
        """The warps of a block: ``warps``, fewer where their merge would not fit
        ``MERGE_BYTES`` of shared memory (one warp needs no merge)."""
        per_warp = self.block_heads * self.value_dim * 4
        return max(1, min(self.warps, MERGE_BYTES // per_warp, self.keys_per_split))

    @property
    def step(self) -> int:
        """Keys a warp takes per step: ``keys_per_step``, or as many (up to 4) as fit beside
        the heads' queries and accumulators in ``STEP_REGISTERS`` f32 registers a lane."""
        if self.keys_per_step is not None:
            return self.keys_per_step
        row = per_lane(self.head_dim) + per_lane(self.value_dim)
        return max(1, min(4, (STEP_REGISTERS - self.block_heads * row) // row))

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
    tag = f"{cfg.dtype}_d{cfg.head_dim}_g{cfg.block_heads}_{cfg.tag()}"
    partial_name, combine_name = f"tessera_paged_attention_{tag}", f"tessera_paged_combine_{tag}"
    splits = splits_expression(cfg)
    partial = KernelInfo(
        partial_name,
        _params(cfg),
        (f"B * S * {cfg.heads_kv * cfg.head_blocks}", splits, "1"),
        (cfg.block_warps * WARP, 1, 1),
    )
    combine = KernelInfo(
        combine_name,
        _combine_params(cfg),
        (f"B * S * {cfg.heads_q}", "1", "1"),
        (COMBINE_WARPS * WARP, 1, 1),
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


def per_lane(dim: int) -> int:
    """Consecutive elements of a row each lane holds."""
    return -(-dim // WARP)


def _lane_row(
    buffer: ir.Value, start: ir.Value, lane: ir.Value, dim: int, aligned: bool
) -> list[ir.Value]:
    """Elements ``lane·E .. lane·E + E - 1`` of the row at ``start`` as f32, 0 past ``dim``
    (the addresses kept inside the row). ``aligned``: ``start`` is a multiple of ``dim``, so
    where E, a power of two, divides ``dim`` the lane's run is one aligned vector load."""
    count = per_lane(dim)
    first = a.mul(lane, count)
    element = ir.MemRefType(buffer.type).element_type
    if aligned and dim % count == 0 and count & (count - 1) == 0:
        inside = a.cmp("slt", first, dim)
        size = a.bit_width(element) // 8
        raw = vector.load(
            ir.VectorType.get([count], element),
            buffer,
            [a.add(start, a.select(inside, first, 0))],
            alignment=min(count * size, 16),
        )
        values = [_widen(vector.extract(raw, [], [e])) for e in range(count)]
        if WARP * count == dim:
            return values
        return [a.select(inside, v, 0.0) for v in values]
    values = []
    for e in range(count):
        d = a.add(first, e)
        inside = a.cmp("slt", d, dim)
        value = _widen(memref.load(buffer, [a.add(start, a.select(inside, d, 0))]))
        values.append(a.select(inside, value, 0.0))
    return values


def _store_lane_row(
    values: list[ir.Value], buffer: ir.Value, start: ir.Value, lane: ir.Value, dim: int
) -> None:
    """Stores the lane's run (``_lane_row``'s elements), rounded to the buffer's type."""
    element = ir.MemRefType(buffer.type).element_type
    first = a.mul(lane, len(values))
    for e, value in enumerate(values):
        d = a.add(first, e)
        out = value if isinstance(element, ir.F32Type) else arith.truncf(element, value)
        if WARP * len(values) == dim:  # every lane's run lies inside the row
            memref.store(out, buffer, [a.add(start, d)])
            continue
        edge = a.if_op(a.cmp("slt", d, dim))
        with ir.InsertionPoint(edge.then_block):
            memref.store(out, buffer, [a.add(start, d)])
            scf.yield_([])


def _load_index(buffer: ir.Value, position: ir.Value) -> ir.Value:
    return a.to_index(memref.load(buffer, [position]))


def _warp_reduce(
    km: KernelModule, value: ir.Value, combine: Callable[[ir.Value, ir.Value], ir.Value]
) -> ir.Value:
    for mask in (16, 8, 4, 2, 1):
        value = combine(value, km.device.shuffle_xor(value, mask))
    return value


def _emit_partial(km: KernelModule, cfg: PagedAttentionConfig, info: KernelInfo) -> None:
    args, block = km.add_launched_kernel(info)
    warps, group, step = cfg.block_warps, cfg.block_heads, cfg.step
    dim, vdim = cfg.head_dim, cfg.value_dim
    with ir.InsertionPoint(block):
        tid = gpu.thread_id(gpu.Dimension.x)
        lane, warp = a.rem(tid, WARP), a.div(tid, WARP)
        seq_q, width = a.to_index(args["S"]), a.to_index(args["M"])
        batches = a.to_index(args["B"])
        # block x = (batch · S + token) · Hkv·H + head block (H blocks per kv head)
        unit = gpu.block_id(gpu.Dimension.x)
        head_block = a.rem(unit, cfg.heads_kv * cfg.head_blocks)
        kv_head = a.div(head_block, cfg.head_blocks)
        # The first query head of this block.
        head0 = a.mul(head_block, group)
        token = a.rem(a.div(unit, cfg.heads_kv * cfg.head_blocks), seq_q)
        batch = a.div(a.div(unit, cfg.heads_kv * cfg.head_blocks), seq_q)
        split = gpu.block_id(gpu.Dimension.y)

        queries = []
        for g in range(group):
            head = a.add(head0, g)
            q_start = a.add(
                a.add(
                    a.mul(batch, a.to_index(args["q_sb"])), a.mul(head, a.to_index(args["q_sh"]))
                ),
                a.mul(token, a.to_index(args["q_ss"])),
            )
            queries.append(_lane_row(args["q"], q_start, lane, dim, aligned=False))
        position = a.add(_load_index(args["cache_index"], batch), token)
        first = _load_index(args["kv_start"], batch)
        if cfg.window is not None:
            first = a.smax(first, a.add(position, 1 - cfg.window))
        # Splits count from the first visible key, so that the M·BS keys a ring of M blocks
        # holds (a sliding layer's table) fit the splits whatever the position.
        split_low = a.add(first, a.mul(split, cfg.keys_per_split))
        low = split_low
        high = a.smin(a.add(position, 1), a.add(split_low, cfg.keys_per_split))
        # This warp's run of the split's keys.
        run = -(-cfg.keys_per_split // warps)
        run_low = a.add(split_low, a.mul(warp, run))
        warp_low = a.smax(low, run_low)
        warp_high = a.smin(high, a.add(run_low, run))
        table_row = a.mul(batch, width)

        n_out = per_lane(vdim)

        def step_keys(base: ir.Value) -> tuple[list[ir.Value], list[ir.Value]]:
            """The step at ``base``'s keys (past the warp's run: ``base``, which a step
            starting inside the run always is) and whether each is in the run."""
            keys, inside = [], []
            for i in range(step):
                key = a.add(base, i)
                inside.append(a.cmp("slt", key, warp_high))
                keys.append(a.select(inside[-1], key, base))
            return keys, inside

        def page_row(key: ir.Value) -> ir.Value:
            """Where ``key``'s cache block is in the block table (inside the row for any key,
            as the page is taken mod M)."""
            return a.add(table_row, a.rem(a.div(key, cfg.block_size), width))

        def pages(base: ir.Value) -> list[ir.Value]:
            """The step at ``base``'s cache blocks, as stored (i32 in a decode table: half the
            registers of an index)."""
            return [memref.load(args["block_table"], [page_row(k)]) for k in step_keys(base)[0]]

        # With ``pages_ahead``, each step's block-table lookups are issued one step ahead
        # (carried in the loop), so a step's K and V loads wait for one memory round trip,
        # not for two.
        ahead = pages(warp_low) if cfg.pages_ahead else []
        init = [a.f32(-math.inf)] * group + [a.f32(0.0)] * group + [a.f32(0.0)] * (group * n_out)
        loop = a.for_op(warp_low, a.smax(warp_high, warp_low), [*init, *ahead], step)
        with ir.InsertionPoint(loop.body):
            base = loop.induction_variable
            carried = list(loop.inner_iter_args)
            maxima, totals = carried[:group], carried[group : 2 * group]
            acc = carried[2 * group : 2 * group + group * n_out]
            looked_up = carried[2 * group + group * n_out :]
            upcoming = pages(a.add(base, step)) if cfg.pages_ahead else []
            # Every key's loads first; the step's first key is always visible.
            keys_of_step, valid = step_keys(base)
            keys, values = [], []
            for i, key in enumerate(keys_of_step):
                if cfg.pages_ahead:
                    physical = a.to_index(looked_up[i])
                else:
                    physical = _load_index(args["block_table"], page_row(key))
                slot = a.add(
                    a.mul(a.add(a.mul(physical, cfg.heads_kv), kv_head), cfg.block_size),
                    a.rem(key, cfg.block_size),
                )
                keys.append(_lane_row(args["k_cache"], a.mul(slot, dim), lane, dim, True))
                values.append(_lane_row(args["v_cache"], a.mul(slot, vdim), lane, vdim, True))
            next_m, next_l, next_acc = [], [], []
            for g in range(group):
                scores = []
                for i in range(step):
                    dot = a.fmul(queries[g][0], keys[i][0])
                    for x, y in zip(queries[g][1:], keys[i][1:], strict=True):
                        dot = a.fma(x, y, dot)
                    score = a.fmul(_warp_reduce(km, dot, a.fadd), cfg.scale)
                    if cfg.softcap is not None:
                        score = a.fmul(a.tanh(a.fmul(score, 1.0 / cfg.softcap)), cfg.softcap)
                    x = a.fmul(score, 1.0 / math.log(2.0))
                    scores.append(x if i == 0 else a.select(valid[i], x, -math.inf))
                m_new = a.tree([maxima[g], *scores], a.fmax)
                alpha = a.exp2(a.fsub(maxima[g], m_new), fast=False)
                weights = [a.exp2(a.fsub(x, m_new), fast=False) for x in scores]
                total = a.fmul(totals[g], alpha)
                out = [a.fmul(o, alpha) for o in acc[g * n_out : (g + 1) * n_out]]
                for i, p in enumerate(weights):
                    total = a.fadd(total, p)
                    out = [a.fma(p, v, o) for o, v in zip(out, values[i], strict=True)]
                next_m.append(m_new)
                next_l.append(total)
                next_acc.extend(out)
            scf.yield_([*next_m, *next_l, *next_acc, *upcoming])
        results = list(loop.results)
        maxima, totals = results[:group], results[group : 2 * group]
        acc = results[2 * group : 2 * group + group * n_out]

        # Row (split, batch, head, token) of the scratch for the block's head g.
        def scratch_row(g: int) -> ir.Value:
            head = a.add(head0, g)
            rows = a.add(a.mul(a.add(a.mul(split, batches), batch), cfg.heads_q), head)
            return a.add(a.mul(rows, seq_q), token)

        seen = a.cmp("slt", low, high)
        if warps == 1:
            _store_direct(args, scratch_row, lane, seen, maxima, totals, acc, vdim)
        else:
            _merge_warps(
                km, cfg, info.name, args, scratch_row, tid, lane, warp, seen, (maxima, totals, acc)
            )
        gpu.ReturnOp([])


def _store_ml(args: dict[str, ir.Value], row: ir.Value, m: ir.Value, total: ir.Value) -> None:
    memref.store(m, args["part_ml"], [a.mul(row, 2)])
    memref.store(total, args["part_ml"], [a.add(a.mul(row, 2), 1)])


def _store_direct(
    args: dict[str, ir.Value],
    scratch_row: Callable[[int], ir.Value],
    lane: ir.Value,
    seen: ir.Value,
    maxima: list[ir.Value],
    totals: list[ir.Value],
    acc: list[ir.Value],
    vdim: int,
) -> None:
    """One warp per block: its results are the split's."""
    n_out = per_lane(vdim)
    for g, (m, total) in enumerate(zip(maxima, totals, strict=True)):
        row = scratch_row(g)
        written = a.if_op(seen)
        with ir.InsertionPoint(written.then_block):
            out = acc[g * n_out : (g + 1) * n_out]
            _store_lane_row(out, args["part_o"], a.mul(row, vdim), lane, vdim)
            scf.yield_([])
        first_lane = a.if_op(a.cmp("eq", lane, 0))
        with ir.InsertionPoint(first_lane.then_block):
            _store_ml(args, row, m, total)
            scf.yield_([])


def _merge_warps(
    km: KernelModule,
    cfg: PagedAttentionConfig,
    name: str,
    args: dict[str, ir.Value],
    scratch_row: Callable[[int], ir.Value],
    tid: ir.Value,
    lane: ir.Value,
    warp: ir.Value,
    seen: ir.Value,
    partial: tuple[list[ir.Value], list[ir.Value], list[ir.Value]],
) -> None:
    """The warps' (max, sum, accumulator) per head meet in shared memory; the block's threads
    then weigh them into the split's result, each thread a few (head, element) pairs, and
    store it with consecutive threads on consecutive elements."""
    maxima, totals, acc = partial
    warps, group, vdim = cfg.block_warps, cfg.block_heads, cfg.value_dim
    n_out = per_lane(vdim)
    f32 = a.f32_type()
    o_smem = km.shared_array(f"{name}_o", [warps * group * vdim], f32)
    ml_smem = km.shared_array(f"{name}_ml", [warps * group * 2], f32)
    for g in range(group):
        base = a.mul(a.add(a.mul(warp, group), g), vdim)
        _store_lane_row(acc[g * n_out : (g + 1) * n_out], o_smem, base, lane, vdim)
    first_lane = a.if_op(a.cmp("eq", lane, 0))
    with ir.InsertionPoint(first_lane.then_block):
        for g in range(group):
            at = a.mul(a.add(a.mul(warp, group), g), 2)
            memref.store(maxima[g], ml_smem, [at])
            memref.store(totals[g], ml_smem, [a.add(at, 1)])
        scf.yield_([])
    gpu.barrier()

    threads = warps * WARP
    for g in range(group):
        ms = [memref.load(ml_smem, [a.idx((w * group + g) * 2)]) for w in range(warps)]
        top = a.tree(ms, a.fmax)
        # A split that saw no key keeps -inf; weigh from 0 so no NaN appears.
        anchor = a.select(a.fcmp("oeq", top, -math.inf), 0.0, top)
        weights = [a.exp2(a.fsub(m, anchor), fast=False) for m in ms]
        row = scratch_row(g)
        first_thread = a.if_op(a.cmp("eq", tid, 0))
        with ir.InsertionPoint(first_thread.then_block):
            total = a.f32(0.0)
            for w, weight in enumerate(weights):
                part = memref.load(ml_smem, [a.idx((w * group + g) * 2 + 1)])
                total = a.fma(weight, part, total)
            _store_ml(args, row, top, total)
            scf.yield_([])
        written = a.if_op(seen)
        with ir.InsertionPoint(written.then_block):
            for chunk in range(-(-vdim // threads)):
                d = a.add(tid, chunk * threads)
                if threads * (chunk + 1) <= vdim:
                    _store_merged(args, o_smem, row, d, weights, g, group, vdim)
                    continue
                edge = a.if_op(a.cmp("slt", d, vdim))
                with ir.InsertionPoint(edge.then_block):
                    _store_merged(args, o_smem, row, d, weights, g, group, vdim)
                    scf.yield_([])
            scf.yield_([])


def _store_merged(
    args: dict[str, ir.Value],
    o_smem: ir.Value,
    row: ir.Value,
    d: ir.Value,
    weights: list[ir.Value],
    g: int,
    group: int,
    vdim: int,
) -> None:
    """Element d of the block's head g: the warps' accumulators, weighted."""
    out = a.f32(0.0)
    for w, weight in enumerate(weights):
        at = a.add(a.idx((w * group + g) * vdim), d)
        out = a.fma(weight, memref.load(o_smem, [at]), out)
    memref.store(out, args["part_o"], [a.add(a.mul(row, vdim), d)])


def _emit_combine(km: KernelModule, cfg: PagedAttentionConfig, info: KernelInfo) -> None:
    args, block = km.add_launched_kernel(info)
    vdim, warps = cfg.value_dim, COMBINE_WARPS
    f32 = a.f32_type()
    with ir.InsertionPoint(block):
        tid = gpu.thread_id(gpu.Dimension.x)
        lane, warp = a.rem(tid, WARP), a.div(tid, WARP)
        seq_q, batches = a.to_index(args["S"]), a.to_index(args["B"])
        splits = a.ceildiv(a.mul(a.to_index(args["M"]), cfg.block_size), cfg.keys_per_split)
        # block x = (batch · Hq + head) · S + token, the scratch's row order within a split
        unit = gpu.block_id(gpu.Dimension.x)
        token = a.rem(unit, seq_q)
        head = a.rem(a.div(unit, seq_q), cfg.heads_q)
        batch = a.div(a.div(unit, seq_q), cfg.heads_q)
        split_rows = a.mul(a.mul(batches, cfg.heads_q), seq_q)

        def row_of(split: ir.Value) -> ir.Value:
            return a.add(a.mul(split, split_rows), unit)

        # Every warp finds the row's maximum, its lanes taking the splits 32 apart.
        peak = a.for_op(lane, splits, [a.f32(-math.inf)], WARP)
        with ir.InsertionPoint(peak.body):
            m = memref.load(args["part_ml"], [a.mul(row_of(peak.induction_variable), 2)])
            scf.yield_([a.fmax(peak.inner_iter_args[0], m)])
        top = _warp_reduce(km, peak.results[0], a.fmax)
        # A row that saw no key keeps -inf everywhere; weigh from 0 so no NaN appears.
        top = a.select(a.fcmp("oeq", top, -math.inf), 0.0, top)

        # Warp w weighs splits w·STEP .. w·STEP + STEP - 1, then the next WARPS·STEP on:
        # with the maximum known, the weighted sums of the warps simply add.
        n_out = per_lane(vdim)
        stride = warps * COMBINE_STEP
        merge = a.for_op(a.mul(warp, COMBINE_STEP), splits, [a.f32(0.0)] * (1 + n_out), stride)
        with ir.InsertionPoint(merge.body):
            total, *acc = merge.inner_iter_args
            for i in range(COMBINE_STEP):
                split = a.add(merge.induction_variable, i)
                inside = a.cmp("slt", split, splits)
                row = row_of(a.select(inside, split, merge.induction_variable))
                m = memref.load(args["part_ml"], [a.mul(row, 2)])
                # Splits past the end and splits that saw no key weigh nothing and are not read.
                used = a.both(inside, a.fcmp("ogt", m, -math.inf))
                read = a.if_op(used, [f32] * (1 + n_out))
                with ir.InsertionPoint(read.then_block):
                    weight = a.exp2(a.fsub(m, top), fast=False)
                    part_total = memref.load(args["part_ml"], [a.add(a.mul(row, 2), 1)])
                    part = _lane_row(args["part_o"], a.mul(row, vdim), lane, vdim, True)
                    scf.yield_(
                        [
                            a.fma(weight, part_total, total),
                            *(a.fma(weight, x, o) for o, x in zip(acc, part, strict=True)),
                        ]
                    )
                with ir.InsertionPoint(read.else_block):
                    scf.yield_([total, *acc])
                total, *acc = read.results
            scf.yield_([total, *acc])
        total, *acc = merge.results

        # The warps' sums meet in shared memory; thread t then finishes elements t, t + 32·W...
        o_smem = km.shared_array(f"{info.name}_o", [warps * vdim], f32)
        total_smem = km.shared_array(f"{info.name}_total", [warps], f32)
        _store_lane_row(acc, o_smem, a.mul(warp, vdim), lane, vdim)
        first_lane = a.if_op(a.cmp("eq", lane, 0))
        with ir.InsertionPoint(first_lane.then_block):
            memref.store(total, total_smem, [warp])
            scf.yield_([])
        gpu.barrier()
        total = a.tree([memref.load(total_smem, [a.idx(w)]) for w in range(warps)], a.fadd)
        inverse = a.select(a.fcmp("ogt", total, 0.0), a.fdiv(1.0, total), 0.0)
        o_start = a.add(
            a.add(a.mul(batch, a.to_index(args["o_sb"])), a.mul(head, a.to_index(args["o_sh"]))),
            a.mul(token, a.to_index(args["o_ss"])),
        )
        element = ir.MemRefType(args["o"].type).element_type
        threads = warps * WARP
        for chunk in range(-(-vdim // threads)):
            d = a.add(tid, chunk * threads)
            edge = a.if_op(a.cmp("slt", d, vdim))
            with ir.InsertionPoint(edge.then_block):
                parts = [memref.load(o_smem, [a.add(a.idx(w * vdim), d)]) for w in range(warps)]
                out = a.fmul(a.tree(parts, a.fadd), inverse)
                if not isinstance(element, ir.F32Type):
                    out = arith.truncf(element, out)
                memref.store(out, args["o"], [a.add(o_start, d)])
                scf.yield_([])
        gpu.ReturnOp([])
