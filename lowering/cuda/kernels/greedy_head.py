"""Greedy decoding's LM head without logits: ``token[m] = argmax_n logit[m, n]`` straight
from the hidden state x [M, K] and the head w [N, K] (torch's Linear / tied embedding layout).

The logits of a decode step are M x N with N the vocabulary (256k for Gemma): writing them
and reading them back for an argmax costs more memory traffic than the argmax needs, and a
greedy step only wants one integer per row. So the GEMV main loop (``gemm_gemv.Gemv``, the
same K loop, f32 accumulation order and warp reduction as the plain GEMV) feeds an argmax
epilogue instead of a store, and two small kernels finish the job:

- *partial*: the GEMV grid (grid.x = P = cdiv(N, warps * cols) column blocks, grid.y over the
  rows). Each logit is what the GEMV would store: ``finish`` (bias, softcap) rounded to the
  dtype, compared as that rounded value widened to f32, so the token is exactly the argmax
  of the GEMV's y. A warp keeps the best of its columns, the block the best of its warps
  (through shared memory), and one thread per row writes the block's (value, column) to the
  f32 / i32 scratch ``part_value`` / ``part_index`` [M, P].
- *combine*: one block of 32 warps per row reduces the P partials (threads stride over
  them, each warp's best by a shuffle butterfly, then the first warp's over the warps' bests
  through shared memory) and one thread writes the token as i64. (One warp a row scanned
  Gemma-2B's 128000 partials in 165 µs on an H100, 6% of a batch-1 decode step:
  bench/results/h100-2026-12-08-profile-timeline.json.)

The order is torch.argmax's: NaN above every number, and among equals (including -0.0 and
0.0, or two NaNs) the smallest index. Where candidates arrive in ascending column order (a
warp's columns, a block's warps) a strict "beats" keeps the first of equals; where they do
not (a lane's partials against the empty start, the butterfly), the index breaks the tie.

Why two kernels and not one with atomics: a packed (value, index) atomicMax needs the
scratch reset before every launch (one more kernel or memset, and under a captured CUDA
graph that reset must be captured too), and a single-kernel "last block combines" needs a
counter reset likewise. Two plain launches need no initial state, write every scratch element
exactly once, and give the same token on every run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, gpu, memref, scf
from mlir.dialects import math as mlir_math

from tessera.errors import LoweringError

from ..kernel import KernelInfo, KernelModule, Param
from .gemm import GemmConfig, kernel_name
from .gemm_epilogue import finish, load_f32, to_dtype
from .gemm_gemv import Gemv, check_early_reads, check_tile, early_weights
from .gemm_ir import Ix, constant, f32, f32_const, for_op, if_op

WARP = 32
# The combine's warps a row: a vocabulary's partials (128000 for Gemma's with one column a
# warp and two warps a block) are too many for one warp to scan in a few microseconds.
COMBINE_WARPS = 32  # = WARP: the first warp reads one pick a lane
# The index of "no candidate yet": past every column, so it loses every tie.
NO_INDEX = 2**31 - 1

COMBINE_PARAMS = (
    Param.buffer("part_value", "f32"),
    Param.buffer("part_index", "i32"),
    Param.buffer("tokens", "i64"),
    Param.scalar("M", "i32"),
)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _i32() -> ir.Type:
    return ir.IntegerType.get_signless(32)


def partial_count(cfg: GemmConfig) -> int:
    """P: partial results per row, one per block of ``warps * cols`` columns (grid.x)."""
    return _cdiv(cfg.N, cfg.gemv.warps * cfg.gemv.cols)


def _checked(cfg: GemmConfig) -> GemmConfig:
    """``cfg`` as the GEMV it runs, or a LoweringError saying why it cannot."""
    if cfg.kernel not in ("gemv", "auto"):
        raise LoweringError(f"the greedy head runs the gemv kernel, not the {cfg.kernel} one")
    if not cfg.transpose_w:
        raise LoweringError("the greedy head needs w as [N, K] (transpose_w=True)")
    if cfg.gated:
        raise LoweringError("the greedy head takes a plain linear head, not a gated one")
    check_tile(cfg)
    g = cfg.gemv
    if g.splits > 1:
        raise LoweringError(f"bad gemv tile {g}: the greedy head does not split K across warps")
    if g.rows > g.warps * WARP:
        raise LoweringError(f"bad gemv tile {g}: the greedy head needs rows <= warps * 32")
    if cfg.N >= NO_INDEX:
        raise LoweringError(f"the greedy head's token index is i32; N={cfg.N} does not fit")
    return dataclasses.replace(cfg, kernel="gemv")


def _partial_params(cfg: GemmConfig) -> tuple[Param, ...]:
    out = [Param.buffer("x", cfg.dtype), Param.buffer("w", cfg.dtype)]
    if cfg.has_bias:
        out.append(Param.buffer("bias", cfg.dtype))
    out += [
        Param.buffer("part_value", "f32"),
        Param.buffer("part_index", "i32"),
        Param.scalar("M", "i32"),
    ]
    return tuple(out)


def build_greedy_head(
    km: KernelModule, cfg: GemmConfig, rounded_softcap: bool = False
) -> tuple[KernelInfo, KernelInfo]:
    """Adds the partial and the combine kernel of ``cfg`` (a GEMV config with w as [N, K],
    not gated; once per distinct config) and returns their launch contracts. Scratch:
    ``part_value`` (f32) and ``part_index`` (i32) of M * ``partial_count(cfg)`` elements.
    ``rounded_softcap``: the softcap's y/c, tanh and ·c each round to the dtype (as a
    narrow-dtype model's own three ops do), y rounded first; otherwise the GEMM epilogue's
    softcap, in f32 before the one rounding. Use inside ``with context,
    ir.Location.unknown():``."""
    cfg = _checked(cfg)
    if rounded_softcap and cfg.softcap is None:
        raise LoweringError("the greedy head's rounded softcap needs a softcap")
    g = cfg.gemv
    parts = partial_count(cfg)
    partial = KernelInfo(
        "greedy_head_"
        + kernel_name(cfg).removeprefix("gemm_gemv_")
        + ("_rounded" if rounded_softcap else ""),
        _partial_params(cfg),
        (str(parts), f"cdiv(M, {g.rows})", "1"),
        (g.warps * WARP, 1, 1),
        reads_before_wait=early_weights(cfg),
    )
    # the combine depends on P alone, so heads with as many partials share it
    combine = KernelInfo(
        f"greedy_combine_p{parts}", COMBINE_PARAMS, ("M", "1", "1"), (COMBINE_WARPS * WARP, 1, 1)
    )
    if not km.has_kernel(partial.name):
        check_early_reads(km, cfg)
        _emit_partial(km, cfg, partial, rounded_softcap)
    if not km.has_kernel(combine.name):
        _emit_combine(km, parts, combine)
    return partial, combine


def beats(a: ir.Value, b: ir.Value) -> ir.Value:
    """a > b in torch.argmax's order, where NaN is above every number: ``ugt`` is a > b or
    either one NaN, and ``ord(b, b)`` rules out b being NaN."""
    above = arith.cmpf(arith.CmpFPredicate.UGT, a, b)
    return arith.andi(above, arith.cmpf(arith.CmpFPredicate.ORD, b, b))


def better(a: ir.Value, a_at: ir.Value, b: ir.Value, b_at: ir.Value) -> ir.Value:
    """Whether (a, a_at) comes before (b, b_at): a beats b, or neither beats the other (equal,
    or both NaN) and a_at is the smaller index."""
    tie = arith.xori(beats(b, a), constant(ir.IntegerType.get_signless(1), 1))
    first = arith.cmpi(arith.CmpIPredicate.slt, a_at, b_at)
    return arith.ori(beats(a, b), arith.andi(tie, first))


def _pick(
    take: ir.Value, a: ir.Value, a_at: ir.Value, b: ir.Value, b_at: ir.Value
) -> tuple[ir.Value, ir.Value]:
    return arith.select(take, a, b), arith.select(take, a_at, b_at)


def _as_stored(cfg: GemmConfig, value: ir.Value) -> ir.Value:
    """The f32 ``value`` as y would hold it: rounded to the dtype, widened back to f32."""
    if cfg.dtype == "f32":
        return value
    return arith.extf(f32(), to_dtype(value, cfg.dtype))


def _logit(cfg: GemmConfig, acc: ir.Value, bias: ir.Value | None) -> ir.Value:
    """The logit the GEMV stores from ``acc``, as f32."""
    return _as_stored(cfg, finish(cfg, acc, None, bias))


def _rounded_logit(cfg: GemmConfig, acc: ir.Value, bias: ir.Value | None) -> ir.Value:
    """The logit after a softcap whose steps each round: y, y/c, tanh and ·c."""
    assert cfg.softcap is not None, "checked by build_greedy_head"
    y = _as_stored(cfg, finish(dataclasses.replace(cfg, softcap=None), acc, None, bias))
    cap = f32_const(float(cfg.softcap))
    scaled = _as_stored(cfg, arith.divf(y, cap))
    return _as_stored(cfg, arith.mulf(_as_stored(cfg, mlir_math.tanh(scaled)), cap))


def _emit_partial(
    km: KernelModule, cfg: GemmConfig, info: KernelInfo, rounded_softcap: bool
) -> None:
    args, block = km.add_launched_kernel(info)
    with ir.InsertionPoint(block):
        gemv = Gemv(cfg, args["x"], [args["w"]], args.get("bias"))
        gemv.start(args["M"])
        sums, cols = gemv.rows_of_w()
        logit = _rounded_logit if rounded_softcap else _logit
        _partial_epilogue(km, cfg, info.name, gemv, sums, cols, args, logit)
        gpu.ReturnOp([])


def _partial_epilogue(
    km: KernelModule,
    cfg: GemmConfig,
    name: str,
    gemv: Gemv,
    sums: list[ir.Value],
    cols: list[ir.Value],
    args: dict[str, ir.Value],
    logit_of: Callable[[GemmConfig, ir.Value, ir.Value | None], ir.Value],
) -> None:
    ix, g, N = gemv.ix, cfg.gemv, cfg.N
    i32 = _i32()
    minus_inf = f32_const(-math.inf)
    valid = [ix.lt(col, N) for col in cols]
    biases = [
        load_f32(gemv.bias, ix.min(col, N - 1), cfg.dtype) if gemv.bias is not None else None
        for col in cols
    ]
    # Each lane holds every sum, so each finds its warp's best per row by itself. Columns go
    # in ascending order and a strict "beats" keeps the first of equals. Columns past N (the
    # last block's) count as -inf, which beats nothing; when the first column is past N, so
    # are the rest, and the warp offers (-inf, NO_INDEX).
    best = []
    for r in range(g.rows):
        value, at = minus_inf, constant(i32, NO_INDEX)
        for c, col in enumerate(cols):
            logit = logit_of(cfg, sums[r * g.cols + c], biases[c])
            logit = arith.select(valid[c], logit, minus_inf)
            column = arith.index_cast(i32, col)
            if c == 0:  # the first column is the start (kept, even at -inf, if valid)
                value, at = logit, arith.select(valid[0], column, at)
            else:
                value, at = _pick(beats(logit, value), logit, column, value, at)
        best.append((value, at))

    # The block's warps own ascending columns (warp 0's first column is always < N): lane 0
    # of each offers its best through shared memory, and thread r of the block scans the
    # warps of row r in order with the same strict rule.
    values = km.shared_array(f"{name}_values", [g.rows, g.warps], f32())
    indices = km.shared_array(f"{name}_indices", [g.rows, g.warps], i32)
    lead = if_op(arith.cmpi(arith.CmpIPredicate.eq, gemv.lane, ix.c(0)))
    with ir.InsertionPoint(lead.then_block):
        for r, (value, at) in enumerate(best):
            memref.store(value, values, [ix.c(r), gemv.warp])
            memref.store(at, indices, [ix.c(r), gemv.warp])
        scf.YieldOp([])
    gpu.barrier()
    tid = gpu.thread_id(gpu.Dimension.x)
    row = ix.add(gemv.rows[0], tid)
    writer = if_op(arith.andi(ix.lt(tid, g.rows), ix.lt(row, gemv.M)))
    with ir.InsertionPoint(writer.then_block):
        value = memref.load(values, [tid, ix.c(0)])
        at = memref.load(indices, [tid, ix.c(0)])
        for w in range(1, g.warps):
            other = memref.load(values, [tid, ix.c(w)])
            other_at = memref.load(indices, [tid, ix.c(w)])
            value, at = _pick(beats(other, value), other, other_at, value, at)
        out = ix.add(ix.mul(row, partial_count(cfg)), gpu.block_id(gpu.Dimension.x))
        memref.store(value, args["part_value"], [out])
        memref.store(at, args["part_index"], [out])
        scf.YieldOp([])


def _emit_combine(km: KernelModule, parts: int, info: KernelInfo) -> None:
    args, block = km.add_launched_kernel(info)
    i32 = _i32()
    threads = COMBINE_WARPS * WARP
    with ir.InsertionPoint(block):
        ix = Ix.at_top()
        tid = gpu.thread_id(gpu.Dimension.x)
        lane, warp = ix.rem(tid, WARP), ix.div(tid, WARP)
        row = gpu.block_id(gpu.Dimension.x)
        first = ix.mul(row, parts)
        # Thread t takes partials t, t + threads, ...: a uniform trip count (the warps stay
        # converged), the last round masked where P is not a multiple of the threads. A
        # thread's first real partial must displace the empty start even at -inf, hence the
        # index tie-break. ``better`` is a total order, so the row's pick is the same
        # whichever thread saw which partial.
        start = [f32_const(-math.inf), constant(i32, NO_INDEX)]
        loop = for_op(ix.c(0), ix.c(_cdiv(parts, threads)), ix.c(1), start)
        with ir.InsertionPoint(loop.body):
            value, at = loop.inner_iter_args
            p = ix.add(ix.mul(loop.induction_variable, threads), tid)
            inside = ix.lt(p, parts) if parts % threads else None
            if inside is not None:
                p = ix.select(inside, p, 0)
            other = memref.load(args["part_value"], [ix.add(first, p)])
            other_at = memref.load(args["part_index"], [ix.add(first, p)])
            take = better(other, other_at, value, at)
            if inside is not None:
                take = arith.andi(inside, take)
            scf.YieldOp(list(_pick(take, other, other_at, value, at)))
        value, at = _warp_pick(*loop.results)
        # each warp's pick through shared memory; the first warp picks among them
        values = km.shared_array(f"{info.name}_values", [COMBINE_WARPS], f32())
        indices = km.shared_array(f"{info.name}_indices", [COMBINE_WARPS], i32)
        lead = if_op(arith.cmpi(arith.CmpIPredicate.eq, lane, ix.c(0)))
        with ir.InsertionPoint(lead.then_block):
            memref.store(value, values, [warp])
            memref.store(at, indices, [warp])
            scf.YieldOp([])
        gpu.barrier()
        first_warp = if_op(arith.cmpi(arith.CmpIPredicate.eq, warp, ix.c(0)))
        with ir.InsertionPoint(first_warp.then_block):
            value, at = _warp_pick(memref.load(values, [lane]), memref.load(indices, [lane]))
            store = if_op(arith.cmpi(arith.CmpIPredicate.eq, lane, ix.c(0)))
            with ir.InsertionPoint(store.then_block):
                token = arith.extsi(ir.IntegerType.get_signless(64), at)
                memref.store(token, args["tokens"], [row])
                scf.YieldOp([])
            scf.YieldOp([])
        gpu.ReturnOp([])


def _warp_pick(value: ir.Value, at: ir.Value) -> tuple[ir.Value, ir.Value]:
    """The warp's best (value, index), held by every lane (a butterfly of ``better``)."""
    i32 = _i32()
    width = constant(i32, WARP)
    for offset in (16, 8, 4, 2, 1):
        mask = constant(i32, offset)
        other = gpu.shuffle(value, mask, width, gpu.ShuffleMode.XOR)[0]
        other_at = gpu.shuffle(at, mask, width, gpu.ShuffleMode.XOR)[0]
        value, at = _pick(better(other, other_at, value, at), other, other_at, value, at)
    return value, at
