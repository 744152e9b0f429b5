"""The f32 GEMM: a register-tiled SIMT kernel (FMA in f32, so results stay within ~1e-6
relative; tensor cores would round operands to tf32).

The block's threads form a grid of 16 columns by T/16 rows; thread (ty, tx) computes rows
``ty + (T/16) i`` and columns ``tx + 16 j`` of the block tile (interleaved, so a warp's
stores are 64 contiguous bytes and its shared reads are broadcasts or conflict-free). Shared
tiles keep K contiguous with 4 floats of padding per row: a thread reads 4 consecutive k of
a row with one 16-byte load, and rows 20 words apart fall in distinct banks. w as [K, N]
is stored k-major instead and read one float per column, consecutive across the warp.
Tiles are staged as the kernel module's device does it (``device.py``: cp.async copies of 16
bytes where K allows, pipelined by ``tessera-schedule-async-copies`` on NVIDIA; loads into
registers and stores into LDS, double-buffered by ``tessera-schedule-lds-copies`` on AMD).
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, gpu, math, memref, scf

from tessera.errors import LoweringError

from ..kernel import KernelInfo, KernelModule
from ..pipeline_match import PIPELINE_ATTR
from ..pipeline_smem import SMEM_ATTR
from .gemm import GemmConfig, GemmTile, default_tile, params
from .gemm_epilogue import finish, load_f32, store_values
from .gemm_ir import Ix, SharedBuffer, f32_const, for_op, if_op, index, shared_views
from .gemm_tiles import SharedTile, block_origin, k_rows, outer_rows

COLUMN_THREADS = 16
PAD = 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _shape(t: GemmTile) -> tuple[int, int]:
    """(rows, columns) each thread computes."""
    row_threads = t.threads // COLUMN_THREADS
    return t.block_m // row_threads, t.block_n // COLUMN_THREADS


def check_tile(t: GemmTile) -> None:
    row_threads = t.threads // COLUMN_THREADS
    if t.threads % COLUMN_THREADS or t.block_m % row_threads or t.block_n % COLUMN_THREADS:
        raise LoweringError(
            f"bad simt gemm tile {t}: block_m must be a multiple of threads/16 "
            f"({row_threads}) and block_n of 16"
        )
    if t.block_k % 4:
        raise LoweringError(f"bad simt gemm tile {t}: block_k must be a multiple of 4")


def launch(cfg: GemmConfig, name: str, smem: int) -> KernelInfo:
    t = cfg.tile or default_tile(cfg)
    grid = (f"cdiv(M, {t.block_m}) * {_cdiv(cfg.N, t.block_n)}", "1", "1")
    return KernelInfo(name, params(cfg), grid, (t.threads, 1, 1), smem)


def emit(km: KernelModule, cfg: GemmConfig, name: str) -> int:
    t = cfg.tile or default_tile(cfg)
    check_tile(t)
    function, block = km.add_kernel(name, params(cfg))
    with ir.InsertionPoint(block):
        smem = _body(km, cfg, t, list(block.arguments))
        gpu.ReturnOp([])
    i64 = ir.IntegerType.get_signless(64)
    function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(i64, smem)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([t.threads, 1, 1])
    km.device.pipeline(function.operation, t.stages)
    return ir.IntegerAttr(function.attributes[SMEM_ATTR]).value


def _body(km: KernelModule, cfg: GemmConfig, t: GemmTile, args: list[ir.Value]) -> int:
    ix = Ix.at_top()
    x, y, m_arg = args[0], args[-2], args[-1]
    weights = args[1 : 1 + len(cfg.weights)]
    bias = args[1 + len(cfg.weights)] if cfg.has_bias else None
    M = arith.index_cast(index(), m_arg)
    tid = gpu.thread_id(gpu.Dimension.x)
    tx, ty = ix.rem(tid, COLUMN_THREADS), ix.div(tid, COLUMN_THREADS)
    row_threads = t.threads // COLUMN_THREADS
    tm, tn = _shape(t)
    m0, n0 = block_origin(ix, M, cfg.N, t.block_m, t.block_n, t.group_m)

    a_tile = SharedTile(t.block_m, t.block_k, "f32", swizzle=False, pad=PAD)
    if cfg.transpose_w:
        b_tile = SharedTile(t.block_n, t.block_k, "f32", swizzle=False, pad=PAD)
    else:
        b_tile = SharedTile(t.block_k, t.block_n, "f32", swizzle=False)
    buffers = [SharedBuffer("a", a_tile.shape, "f32")]
    buffers += [SharedBuffer(f"b{i}", b_tile.shape, "f32") for i in range(len(weights))]
    views, smem = shared_views(ix, buffers)
    a_copies = outer_rows(ix, tid, t.threads, a_tile, m0, M, cfg.K)
    if cfg.transpose_w:
        b_copies = outer_rows(ix, tid, t.threads, b_tile, n0, cfg.N, cfg.K)
    else:
        b_copies = k_rows(ix, tid, t.threads, b_tile, n0, cfg.N, cfg.K)
    rows = [ix.add(ty, row_threads * i) for i in range(tm)]
    cols = [ix.add(tx, COLUMN_THREADS * j) for j in range(tn)]

    sets = len(weights)
    per_set = tm * tn
    loop = for_op(
        ix.c(0), ix.c(_cdiv(cfg.K, t.block_k)), ix.c(1), [f32_const(0.0)] * (per_set * sets)
    )
    loop.operation.attributes[PIPELINE_ATTR] = ir.UnitAttr.get()
    with ir.InsertionPoint(loop.body):
        kt = loop.induction_variable
        staged = [(a_copies, x, views["a"])]
        staged += [(b_copies, w, views[f"b{i}"]) for i, w in enumerate(weights)]
        km.device.stage_tiles(ix, kt, staged)
        gpu.barrier()
        carried = list(loop.inner_iter_args)
        acc = [carried[s * per_set : (s + 1) * per_set] for s in range(sets)]
        for kk in range(0, t.block_k, 4):
            a_k = [[memref.load(views["a"], [r, ix.c(kk + q)]) for q in range(4)] for r in rows]
            for s in range(sets):
                view = views[f"b{s}"]
                if cfg.transpose_w:
                    b_k = [[memref.load(view, [c, ix.c(kk + q)]) for q in range(4)] for c in cols]
                else:
                    b_k = [[memref.load(view, [ix.c(kk + q), c]) for q in range(4)] for c in cols]
                for q in range(4):
                    for i in range(tm):
                        for j in range(tn):
                            acc[s][i * tn + j] = math.fma(a_k[i][q], b_k[j][q], acc[s][i * tn + j])
        gpu.barrier()
        scf.YieldOp([v for s in acc for v in s])
    results = list(loop.results)
    acc = [results[s * per_set : (s + 1) * per_set] for s in range(sets)]

    inside = ix.lt(ix.add(m0, t.block_m - 1), M)
    if cfg.N % t.block_n:
        inside = arith.andi(inside, ix.lt(ix.add(n0, t.block_n - 1), cfg.N))
    branch = if_op(inside, has_else=True)
    for block, guarded in ((branch.then_block, False), (branch.else_block, True)):
        with ir.InsertionPoint(block):
            for j, c in enumerate(cols):
                col = ix.add(n0, c)
                b_value = None
                if bias is not None:
                    b_value = load_f32(bias, ix.min(col, cfg.N - 1) if guarded else col, "f32")
                for i, r in enumerate(rows):
                    row = ix.add(m0, r)
                    value = finish(
                        cfg, acc[0][i * tn + j], acc[1][i * tn + j] if cfg.gated else None, b_value
                    )
                    at = ix.add(ix.mul(row, cfg.N), col)
                    if not guarded:
                        store_values(y, at, [value], "f32")
                        continue
                    store = if_op(arith.andi(ix.lt(row, M), ix.lt(col, cfg.N)))
                    with ir.InsertionPoint(store.then_block):
                        store_values(y, at, [value], "f32")
                        scf.YieldOp([])
            scf.YieldOp([])
    return smem
