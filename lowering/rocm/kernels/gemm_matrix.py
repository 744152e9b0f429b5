"""The matrix-core GEMM on AMD (bf16, f16): the AMD form of ``gemm_mma``. Tiles are staged into
LDS through registers (``lds_copies``), double-buffered by ``tessera-schedule-lds-copies``, and
multiplied by 16x16x16 matrix instructions with f32 accumulators: MFMA on CDNA (wave64,
``gemm_mfma``), WMMA on RDNA 3 (wave32, ``gemm_wmma``). Everything else is the CUDA
kernels': ``GemmConfig``, the parameters, the tile and its copy units (``gemm_tiles``), the
block order (``block_origin``) and the epilogue (``gemm_epilogue``).

A block computes ``block_m x block_n`` of y with ``warps_m x warps_n`` waves, each owning a
(block_m / warps_m) x (block_n / warps_n) tile of 16x16 matrix tiles. LDS tiles keep K
contiguous (w as [N, K]) with 8 elements of padding per row, so rows start 16-byte aligned and
consecutive rows fall in different banks.

Operand layouts (lane l of the wave; A is 16 rows x 16 k, B 16 k x 16 columns, D 16 x 16):

- MFMA ``v_mfma_f32_16x16x16{bf16_1k,f16}``: A: lane l holds row l % 16, k = 4·(l / 16) +
  0..3; B: column l % 16, the same k; D register r: row 4·(l / 16) + r, column l % 16.
- WMMA ``v_wmma_f32_16x16x16_{bf16,f16}`` (wave32): A: lane l holds row l % 16, all 16 k
  (lanes 16-31 repeat lanes 0-15, as the instruction requires); B: column l % 16, all 16 k;
  D register r: row 2·r + l / 16, column l % 16.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import amdgpu, arith, gpu, memref, scf, vector

from tessera.errors import LoweringError
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemmTile, default_tile, params
from tessera.lowering.cuda.kernels.gemm_epilogue import (
    finish,
    load_f32,
    store_tile,
    store_values,
)
from tessera.lowering.cuda.kernels.gemm_ir import (
    Ix,
    SharedBuffer,
    element,
    f32,
    for_op,
    if_op,
    index,
    shared_views,
)
from tessera.lowering.cuda.kernels.gemm_tiles import (
    SharedTile,
    TileCopies,
    block_origin,
    k_rows,
    outer_rows,
)
from tessera.lowering.cuda.pipeline_match import PIPELINE_ATTR
from tessera.lowering.cuda.pipeline_smem import SMEM_ATTR

MATRIX = 16  # m = n = k of one matrix instruction
PAD = 8  # elements after each LDS row: 16 bytes


@dataclass(frozen=True)
class Instruction:
    """One 16x16x16 matrix instruction family: the wave it runs in, the elements of A (and
    B) each lane holds, the accumulator registers per lane, and where register r of lane l
    sits in D (``row_of(l, r)``; the column is l % 16)."""

    name: str  # "mfma" or "wmma"
    wave: int
    operand: int
    accumulator: int

    def k_first(self, ix: Ix, lane: ir.Value) -> ir.Value | int:
        """The first k (within a 16-wide step) of lane ``lane``'s A and B elements."""
        return ix.mul(ix.div(lane, 16), 4) if self.name == "mfma" else 0

    def row_of(self, ix: Ix, lane: ir.Value, register: int) -> ir.Value:
        if self.name == "mfma":
            return ix.add(ix.mul(ix.div(lane, 16), 4), register)
        return ix.add(ix.div(lane, 16), 2 * register)


MFMA = Instruction("mfma", 64, 4, 4)
WMMA = Instruction("wmma", 32, 16, 8)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def threads(tile: GemmTile, instruction: Instruction) -> int:
    return tile.warps_m * tile.warps_n * instruction.wave


def check_tile(cfg: GemmConfig, t: GemmTile) -> None:
    """Raises ``LoweringError`` for a tile this kernel cannot use."""
    problems = []
    if cfg.dtype not in ("bf16", "f16"):
        problems.append(f"the matrix-core gemm takes bf16 or f16, not {cfg.dtype}")
    if t.block_m % (MATRIX * t.warps_m):
        problems.append(f"block_m {t.block_m} is not a multiple of 16 * warps_m ({t.warps_m})")
    if t.block_n % (MATRIX * t.warps_n):
        problems.append(f"block_n {t.block_n} is not a multiple of 16 * warps_n ({t.warps_n})")
    if t.block_k % MATRIX or t.block_k < MATRIX:
        problems.append(f"block_k {t.block_k} is not a multiple of 16")
    if problems:
        raise LoweringError(f"bad matrix-core gemm tile {t}: " + "; ".join(problems))


def launch(cfg: GemmConfig, name: str, smem: int, instruction: Instruction) -> KernelInfo:
    t = cfg.tile or default_tile(cfg)
    grid = (f"cdiv(M, {t.block_m}) * {_cdiv(cfg.N, t.block_n)}", "1", "1")
    return KernelInfo(name, params(cfg), grid, (threads(t, instruction), 1, 1), smem)


def emit(km: KernelModule, cfg: GemmConfig, name: str, instruction: Instruction) -> int:
    """Builds the kernel into ``km``, pipelines it, and returns its LDS bytes."""
    t = cfg.tile or default_tile(cfg)
    check_tile(cfg, t)
    if km.device.wave != instruction.wave:
        raise LoweringError(
            f"{instruction.name} runs in waves of {instruction.wave}; {km.arch} has "
            f"{km.device.wave}"
        )
    function, block = km.add_kernel(name, params(cfg))
    with ir.InsertionPoint(block):
        smem = _Kernel(km, cfg, t, instruction, list(block.arguments)).build()
        gpu.ReturnOp([])
    i64 = ir.IntegerType.get_signless(64)
    function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(i64, smem)
    count = threads(t, instruction)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([count, 1, 1])
    km.device.pipeline(function.operation, t.stages)
    return ir.IntegerAttr(function.attributes[SMEM_ATTR]).value


class _Kernel:
    def __init__(
        self,
        km: KernelModule,
        cfg: GemmConfig,
        tile: GemmTile,
        instruction: Instruction,
        args: list[ir.Value],
    ) -> None:
        self.km, self.cfg, self.t, self.inst = km, cfg, tile, instruction
        self.x, self.y = args[0], args[-2]
        self.weights = args[1 : 1 + len(cfg.weights)]
        self.bias = args[1 + len(cfg.weights)] if cfg.has_bias else None
        self.m_arg = args[-1]
        self.et = element(cfg.dtype)
        self.mi = tile.block_m // tile.warps_m // MATRIX
        self.ni = tile.block_n // tile.warps_n // MATRIX
        self.k_steps = tile.block_k // MATRIX
        self.threads = threads(tile, instruction)

    def build(self) -> int:
        cfg, t, inst = self.cfg, self.t, self.inst
        ix = self.ix = Ix.at_top()
        self.M = arith.index_cast(index(), self.m_arg)
        tid = gpu.thread_id(gpu.Dimension.x)
        self.lane = ix.rem(tid, inst.wave)
        wave = ix.div(tid, inst.wave)
        warp_m, warp_n = ix.rem(wave, t.warps_m), ix.div(wave, t.warps_m)
        self.m0, self.n0 = block_origin(ix, self.M, cfg.N, t.block_m, t.block_n, t.group_m)
        self.wave_m0 = ix.mul(warp_m, t.block_m // t.warps_m)
        self.wave_n0 = ix.mul(warp_n, t.block_n // t.warps_n)
        a_tile = SharedTile(t.block_m, t.block_k, cfg.dtype, swizzle=False, pad=PAD)
        if cfg.transpose_w:
            b_tile = SharedTile(t.block_n, t.block_k, cfg.dtype, swizzle=False, pad=PAD)
        else:
            b_tile = SharedTile(t.block_k, t.block_n, cfg.dtype, swizzle=False, pad=PAD)
        buffers = [SharedBuffer("a", a_tile.shape, cfg.dtype)]
        buffers += [
            SharedBuffer(f"b{i}", b_tile.shape, cfg.dtype) for i in range(len(self.weights))
        ]
        views, smem = shared_views(ix, buffers)
        self.a_view = views["a"]
        self.b_views = [views[f"b{i}"] for i in range(len(self.weights))]
        a_copies = outer_rows(ix, tid, self.threads, a_tile, self.m0, self.M, cfg.K)
        b_copies = self._b_copies(tid, b_tile)
        staged: list[tuple[TileCopies, ir.Value, ir.Value]] = [(a_copies, self.x, self.a_view)]
        staged += [(b_copies, w, v) for w, v in zip(self.weights, self.b_views, strict=True)]
        accumulators = self._main_loop(staged)
        self._epilogue(accumulators)
        return smem

    def _b_copies(self, tid: ir.Value, tile: SharedTile) -> TileCopies:
        cfg = self.cfg
        if cfg.transpose_w:
            return outer_rows(self.ix, tid, self.threads, tile, self.n0, cfg.N, cfg.K)
        return k_rows(self.ix, tid, self.threads, tile, self.n0, cfg.N, cfg.K)

    # -- fragments -------------------------------------------------------------------------
    def _operand_type(self) -> ir.VectorType:
        return ir.VectorType.get([self.inst.operand], self.et)

    def _a(self, ks: int, m: int) -> ir.Value:
        """Lane's A elements of m tile ``m`` at k step ``ks``: consecutive k of one row."""
        ix = self.ix
        row = ix.add(ix.add(self.wave_m0, m * MATRIX), ix.rem(self.lane, MATRIX))
        k = ix.add(ks * MATRIX, self.inst.k_first(ix, self.lane))
        size = self.inst.operand * 2
        return vector.load(self._operand_type(), self.a_view, [row, k], alignment=min(size, 16))

    def _b(self, view: ir.Value, ks: int, n: int) -> ir.Value:
        """Lane's B elements of n tile ``n``: consecutive k of one column of w."""
        ix, cfg = self.ix, self.cfg
        col = ix.add(ix.add(self.wave_n0, n * MATRIX), ix.rem(self.lane, MATRIX))
        k = ix.add(ks * MATRIX, self.inst.k_first(ix, self.lane))
        if cfg.transpose_w:
            size = self.inst.operand * 2
            return vector.load(self._operand_type(), view, [col, k], alignment=min(size, 16))
        values = [memref.load(view, [ix.add(k, q), col]) for q in range(self.inst.operand)]
        return vector.from_elements(self._operand_type(), values)

    def _multiply(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        if self.inst.name == "mfma":
            return amdgpu.mfma(MATRIX, MATRIX, MATRIX, a, b, c, blocks=1)
        return amdgpu.wmma(MATRIX, MATRIX, MATRIX, a, b, c)

    # -- main loop -------------------------------------------------------------------------
    def _main_loop(
        self, staged: list[tuple[TileCopies, ir.Value, ir.Value]]
    ) -> list[list[ir.Value]]:
        """The canonical (unpipelined) k loop; returns per weight the accumulators of every
        (m tile, n tile), as ``vector<Rxf32>``."""
        ix, cfg, t = self.ix, self.cfg, self.t
        acc_type = ir.VectorType.get([self.inst.accumulator], f32())
        zero = arith.constant(  # type: ignore[call-arg]
            acc_type, ir.DenseElementsAttr.get_splat(acc_type, ir.FloatAttr.get(f32(), 0.0))
        )
        per_set = self.mi * self.ni
        sets = len(self.weights)
        loop = for_op(ix.c(0), ix.c(_cdiv(cfg.K, t.block_k)), ix.c(1), [zero] * (per_set * sets))
        loop.operation.attributes[PIPELINE_ATTR] = ir.UnitAttr.get()
        with ir.InsertionPoint(loop.body):
            self.km.device.stage_tiles(ix, loop.induction_variable, staged)
            gpu.barrier()
            carried = list(loop.inner_iter_args)
            acc = [carried[s * per_set : (s + 1) * per_set] for s in range(sets)]
            for ks in range(self.k_steps):
                a = [self._a(ks, m) for m in range(self.mi)]
                for s, view in enumerate(self.b_views):
                    b = [self._b(view, ks, n) for n in range(self.ni)]
                    for m in range(self.mi):
                        for n in range(self.ni):
                            at = m * self.ni + n
                            acc[s][at] = self._multiply(a[m], b[n], acc[s][at])
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
        ix, cfg, N = self.ix, self.cfg, self.cfg.N
        for n in range(self.ni):
            col = ix.add(ix.add(self.n0, ix.add(self.wave_n0, n * MATRIX)), ix.rem(self.lane, 16))
            bias = None
            if self.bias is not None:
                bias = load_f32(self.bias, ix.min(col, N - 1) if guarded else col, cfg.dtype)
            for m in range(self.mi):
                at = m * self.ni + n
                for r in range(self.inst.accumulator):
                    row = ix.add(
                        ix.add(self.m0, ix.add(self.wave_m0, m * MATRIX)),
                        self.inst.row_of(ix, self.lane, r),
                    )
                    gate = vector.extract(acc[0][at], [], [r])
                    up = vector.extract(acc[1][at], [], [r]) if cfg.gated else None
                    value = finish(cfg, gate, up, bias)
                    spot = ix.add(ix.mul(row, N), col)
                    if not guarded:
                        store_values(self.y, spot, [value], cfg.dtype)
                        continue
                    store = if_op(arith.andi(ix.lt(row, self.M), ix.lt(col, N)))
                    with ir.InsertionPoint(store.then_block):
                        store_values(self.y, spot, [value], cfg.dtype)
                        scf.YieldOp([])
