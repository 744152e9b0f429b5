"""The tensor-core GEMM (bf16, f16): cp.async → swizzled shared tiles → ldmatrix →
``mma.sync.m16n8k16`` with f32 accumulators, pipelined by ``tessera-schedule-async-copies``.

A block computes ``block_m x block_n`` of y; its warps form a ``warps_m x warps_n`` grid,
each owning a (block_m / warps_m) x (block_n / warps_n) warp tile of 16x8 MMA tiles. Per
16-wide k step a warp loads its A fragments with ``ldmatrix.x4`` (one 16x16 A tile each)
and its B fragments with ``ldmatrix.x4`` (two 16x8 B tiles each; ``.trans`` when w is
[K, N]), then issues one MMA per (m, n) tile pair. bf16 goes through ``nvvm.mma.sync`` with
packed i32 operands (``nvgpu.mma.sync`` cannot type bf16, DESIGN.md §11), and f16 the same
way so both share one path.

Fragment layouts (PTX ISA, mma.m16n8k16, lane = 4 * group + t):
A (row): a0 = (group, 2t..2t+1), a1 = (group+8, 2t..), a2 = (group, 2t+8..), a3 = (group+8,
2t+8..) — ldmatrix.x4 with lane l addressing row l % 16, column 8 * (l // 16) of the
16x16 tile returns exactly a0..a3. B (col): b0 = (k 2t..2t+1, n group), b1 = (k 2t+8.., n
group) — with w as [N, K] in shared memory these are rows n and columns k of an 8x8 matrix,
so a plain ldmatrix gives them; lane l addresses n row (l % 8) + 8 * (l // 16), k column
8 * ((l // 8) % 2), returning b0, b1 of n tile 0 and b0, b1 of n tile 1. C: c0, c1 =
(group, 2t..2t+1), c2, c3 = (group + 8, 2t..).

Blocks are numbered along M first within groups of ``group_m`` row tiles (grid.x =
cdiv(M, block_m) * cdiv(N, block_n)), so the blocks running together share w tiles in L2.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, llvm, nvgpu, nvvm, scf, vector

from tessera.errors import LoweringError

from ..kernel import KernelInfo, KernelModule
from ..pipeline_match import PIPELINE_ATTR
from ..pipeline_smem import SMEM_ATTR
from ..schedule_async_copies import Options, schedule_async_copies
from .gemm import GemmConfig, GemmTile, default_tile, params
from .gemm_epilogue import finish, load_f32, store_tile, store_values
from .gemm_ir import (
    Ix,
    SharedBuffer,
    element,
    f32,
    f32_const,
    f32x4_struct,
    for_op,
    if_op,
    index,
    shared_views,
)
from .gemm_tiles import SharedTile, TileCopies, block_origin, k_rows, outer_rows


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def check_tile(cfg: GemmConfig, t: GemmTile) -> None:
    """Raises ``LoweringError`` for a tile the tensor-core kernel cannot use."""
    problems = []
    if t.block_m % (16 * t.warps_m):
        problems.append(f"block_m {t.block_m} is not a multiple of 16 * warps_m ({t.warps_m})")
    if t.block_n % (16 * t.warps_n):
        problems.append(f"block_n {t.block_n} is not a multiple of 16 * warps_n ({t.warps_n})")
    if t.block_k % 16 or t.block_k < 16:
        problems.append(f"block_k {t.block_k} is not a multiple of 16")
    if t.stages < 1 or t.group_m < 1:
        problems.append("stages and group_m must be >= 1")
    if problems:
        raise LoweringError(f"bad mma gemm tile {t}: " + "; ".join(problems))


def launch(cfg: GemmConfig, name: str, smem: int) -> KernelInfo:
    t = cfg.tile or default_tile(cfg)
    grid = (f"cdiv(M, {t.block_m}) * {_cdiv(cfg.N, t.block_n)}", "1", "1")
    return KernelInfo(name, params(cfg), grid, (t.threads, 1, 1), smem)


def emit(km: KernelModule, cfg: GemmConfig, name: str) -> int:
    """Builds the kernel into ``km``, pipelines it, and returns its shared-memory bytes."""
    t = cfg.tile or default_tile(cfg)
    check_tile(cfg, t)
    function, block = km.add_kernel(name, params(cfg))
    with ir.InsertionPoint(block):
        smem = _MmaKernel(cfg, t, list(block.arguments)).build()
        gpu.ReturnOp([])
    i64 = ir.IntegerType.get_signless(64)
    function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(i64, smem)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([t.threads, 1, 1])
    schedule_async_copies(function.operation, Options(stages=t.stages))
    return ir.IntegerAttr(function.attributes[SMEM_ATTR]).value


@dataclass(frozen=True)
class _Operand:
    """A B operand (w or w2): its global buffer, shared view, copies and the ldmatrix
    addresses per (k step, n-tile pair)."""

    source: ir.Value
    view: ir.Value
    copies: TileCopies
    addresses: list[list[tuple[ir.Value, ir.Value]]]


class _MmaKernel:
    def __init__(self, cfg: GemmConfig, tile: GemmTile, args: list[ir.Value]) -> None:
        self.cfg, self.t = cfg, tile
        self.x, self.y = args[0], args[-2]
        self.weights = args[1 : 1 + len(cfg.weights)]
        self.bias = args[1 + len(cfg.weights)] if cfg.has_bias else None
        self.m_arg = args[-1]
        self.et = element(cfg.dtype)
        self.mi = tile.block_m // tile.warps_m // 16
        self.ni = tile.block_n // tile.warps_n // 8
        self.k_steps = tile.block_k // 16

    # -- setup -----------------------------------------------------------------------------
    def build(self) -> int:
        cfg, t = self.cfg, self.t
        ix = self.ix = Ix.at_top()
        self.M = arith.index_cast(index(), self.m_arg)
        tid = gpu.thread_id(gpu.Dimension.x)
        self.lane = ix.rem(tid, 32)
        warp = ix.div(tid, 32)
        self.warp_m, self.warp_n = ix.rem(warp, t.warps_m), ix.div(warp, t.warps_m)
        self.m0, self.n0 = block_origin(ix, self.M, cfg.N, t.block_m, t.block_n, t.group_m)
        b_tile = (
            SharedTile(t.block_n, t.block_k, cfg.dtype)
            if cfg.transpose_w
            else SharedTile(t.block_k, t.block_n, cfg.dtype)
        )
        a_tile = SharedTile(t.block_m, t.block_k, cfg.dtype)
        buffers = [SharedBuffer("a", a_tile.shape, cfg.dtype)]
        buffers += [
            SharedBuffer(f"b{i}", b_tile.shape, cfg.dtype) for i in range(len(self.weights))
        ]
        views, smem = shared_views(ix, buffers)
        self.a_tile, self.b_tile = a_tile, b_tile
        self.a_view = views["a"]
        self.a_copies = outer_rows(ix, tid, t.threads, a_tile, self.m0, self.M, cfg.K)
        self.a_addresses = [
            [self._a_address(ks, m) for m in range(self.mi)] for ks in range(self.k_steps)
        ]
        self.operands = [
            _Operand(w, views[f"b{i}"], self._b_copies(tid, b_tile), self._b_addresses())
            for i, w in enumerate(self.weights)
        ]
        accumulators = self._main_loop()
        self._epilogue(accumulators)
        return smem

    def _b_copies(self, tid: ir.Value, tile: SharedTile) -> TileCopies:
        cfg, t = self.cfg, self.t
        if cfg.transpose_w:
            return outer_rows(self.ix, tid, t.threads, tile, self.n0, cfg.N, cfg.K)
        return k_rows(self.ix, tid, t.threads, tile, self.n0, cfg.N, cfg.K)

    def _a_address(self, ks: int, m: int) -> tuple[ir.Value, ir.Value]:
        ix = self.ix
        row = ix.add(ix.mul(self.warp_m, self.t.block_m // self.t.warps_m), m * 16)
        row = ix.add(row, ix.rem(self.lane, 16))
        col = ix.add(ks * 16, ix.mul(ix.div(self.lane, 16), 8))
        return row, self.a_tile.column(ix, row, col)

    def _b_addresses(self) -> list[list[tuple[ir.Value, ir.Value]]]:
        ix, t, lane = self.ix, self.t, self.lane
        warp_n0 = ix.mul(self.warp_n, t.block_n // t.warps_n)
        out = []
        for ks in range(self.k_steps):
            row_of_pair = []
            for pair in range(self.ni // 2):
                n_first = ix.add(warp_n0, pair * 16)
                if self.cfg.transpose_w:
                    # rows n: (l % 8) + 8 * (l // 16); columns k: 8 * ((l // 8) % 2)
                    n = ix.add(n_first, ix.add(ix.rem(lane, 8), ix.mul(ix.div(lane, 16), 8)))
                    k = ix.add(ks * 16, ix.mul(ix.rem(ix.div(lane, 8), 2), 8))
                    row_of_pair.append((n, self.b_tile.column(ix, n, k)))
                else:
                    # rows k: (l % 8) + 8 * ((l // 8) % 2); columns n: 8 * (l // 16)
                    k = ix.add(
                        ks * 16, ix.add(ix.rem(lane, 8), ix.mul(ix.rem(ix.div(lane, 8), 2), 8))
                    )
                    n = ix.add(n_first, ix.mul(ix.div(lane, 16), 8))
                    row_of_pair.append((k, self.b_tile.column(ix, k, n)))
            out.append(row_of_pair)
        return out

    # -- main loop -------------------------------------------------------------------------
    def _ldmatrix(
        self, view: ir.Value, at: tuple[ir.Value, ir.Value], trans: bool
    ) -> list[ir.Value]:
        """Four 8x8 matrices, one register each (two 16-bit values): packed into i32 for
        bf16, as ``vector<2xf16>`` for f16 (the operand types nvvm.mma.sync takes)."""
        i32 = ir.IntegerType.get_signless(32)
        tiles = nvgpu.ldmatrix(ir.VectorType.get([4, 2], self.et), view, list(at), trans, 4)
        pairs = [vector.extract(tiles, [], [r]) for r in range(4)]
        if self.cfg.dtype == "f16":
            return pairs
        one = ir.VectorType.get([1], i32)
        return [vector.extract(vector.bitcast(one, pair), [], [0]) for pair in pairs]

    def _mma(self, a: list[ir.Value], b: list[ir.Value], c: list[ir.Value]) -> list[ir.Value]:
        ptx = ir.Attribute.parse(f"#nvvm.mma_type<{self.cfg.dtype}>")
        result = nvvm.mma_sync(
            f32x4_struct(),
            ir.Attribute.parse("#nvvm.shape<m = 16, n = 8, k = 16>"),
            ir.Attribute.parse("#nvvm.mma_layout<row>"),
            ir.Attribute.parse("#nvvm.mma_layout<col>"),
            a,
            b,
            c,
            multiplicand_a_ptx_type=ptx,
            multiplicand_b_ptx_type=ptx,
        )
        return [llvm.extractvalue(f32(), result, [i]) for i in range(4)]

    def _main_loop(self) -> list[list[ir.Value]]:
        """The canonical (unpipelined) k loop; returns the accumulators per operand, each a
        flat list over (m tile, n tile, register)."""
        ix, cfg, t = self.ix, self.cfg, self.t
        per_set = self.mi * self.ni * 4
        zero = f32_const(0.0)
        sets = len(self.operands)
        loop = for_op(ix.c(0), ix.c(_cdiv(cfg.K, t.block_k)), ix.c(1), [zero] * (per_set * sets))
        loop.operation.attributes[PIPELINE_ATTR] = ir.UnitAttr.get()
        with ir.InsertionPoint(loop.body):
            kt = loop.induction_variable
            tokens = self.a_copies.issue(ix, kt, self.x, self.a_view)
            for op in self.operands:
                tokens += op.copies.issue(ix, kt, op.source, op.view)
            group = nvgpu.device_async_create_group(tokens)
            nvgpu.device_async_wait(group)
            gpu.barrier()
            acc = [list(loop.inner_iter_args)[s * per_set : (s + 1) * per_set] for s in range(sets)]
            for ks in range(self.k_steps):
                a = [
                    self._ldmatrix(self.a_view, self.a_addresses[ks][m], False)
                    for m in range(self.mi)
                ]
                for s, op in enumerate(self.operands):
                    b = [
                        self._ldmatrix(op.view, op.addresses[ks][p], not cfg.transpose_w)
                        for p in range(self.ni // 2)
                    ]
                    for m in range(self.mi):
                        for n in range(self.ni):
                            regs = b[n // 2][2 * (n % 2) : 2 * (n % 2) + 2]
                            at = (m * self.ni + n) * 4
                            acc[s][at : at + 4] = self._mma(a[m], regs, acc[s][at : at + 4])
            gpu.barrier()
            scf.YieldOp([v for s in acc for v in s])
        results = list(loop.results)
        return [results[s * per_set : (s + 1) * per_set] for s in range(sets)]

    # -- epilogue --------------------------------------------------------------------------
    def _epilogue(self, acc: list[list[ir.Value]]) -> None:
        store_tile(
            self.ix,
            (self.m0, self.n0),
            self.M,
            self.cfg,
            self.t,
            lambda guarded: self._stores(acc, guarded=guarded),
        )

    def _stores(self, acc: list[list[ir.Value]], guarded: bool) -> None:
        ix, cfg, t, lane = self.ix, self.cfg, self.t, self.lane
        N = cfg.N
        row0 = ix.add(ix.add(self.m0, ix.mul(self.warp_m, t.block_m // t.warps_m)), ix.div(lane, 4))
        col0 = ix.add(
            ix.add(self.n0, ix.mul(self.warp_n, t.block_n // t.warps_n)), ix.mul(ix.rem(lane, 4), 2)
        )
        for n in range(self.ni):
            col = ix.add(col0, n * 8)
            bias = None
            if self.bias is not None:
                bias = [
                    load_f32(
                        self.bias,
                        ix.min(ix.add(col, q), N - 1) if guarded else ix.add(col, q),
                        cfg.dtype,
                    )
                    for q in range(2)
                ]
            for m in range(self.mi):
                for half in range(2):
                    row = ix.add(row0, m * 16 + half * 8)
                    at = (m * self.ni + n) * 4 + half * 2
                    values = [
                        finish(
                            cfg,
                            acc[0][at + q],
                            acc[1][at + q] if cfg.gated else None,
                            bias[q] if bias is not None else None,
                        )
                        for q in range(2)
                    ]
                    self._store_pair(row, col, values, guarded)

    def _store_pair(
        self, row: ir.Value, col: ir.Value, values: list[ir.Value], guarded: bool
    ) -> None:
        ix, N, dtype = self.ix, self.cfg.N, self.cfg.dtype
        at = ix.add(ix.mul(row, N), col)
        if N % 2 == 0:
            # col is even, so (row * N + col) is too: one aligned 4-byte store
            if not guarded:
                store_values(self.y, at, values, dtype)
                return
            branch = if_op(arith.andi(ix.lt(row, self.M), ix.lt(col, N)))
            with ir.InsertionPoint(branch.then_block):
                store_values(self.y, at, values, dtype)
                scf.YieldOp([])
            return
        for q, value in enumerate(values):
            spot = ix.add(at, q)
            if not guarded:
                store_values(self.y, spot, [value], dtype)
                continue
            branch = if_op(arith.andi(ix.lt(row, self.M), ix.lt(ix.add(col, q), N)))
            with ir.InsertionPoint(branch.then_block):
                store_values(self.y, spot, [value], dtype)
                scf.YieldOp([])
