"""The GEMV path for few rows of x (decode: M = 1..8), bound by reading w once.

w as [N, K] (``transpose_w``): each warp owns ``cols`` output columns (rows of w); its 32
lanes stride along K with 16-byte vector loads of w (``unroll`` steps per loop iteration, so
many loads are in flight), keep per-lane partial sums as f32 vectors, and reduce them with
warp shuffles at the end. x rows are read the same way (they stay in L1/L2).

w as [K, N]: ``cols`` lanes of a warp each own one 16-byte run of consecutive columns, and
the other 32/cols lanes stride along K; after the loop the lanes that share columns reduce
with shuffles.

Each block handles ``rows`` rows of x (grid.y = cdiv(M, rows)); rows past M read row M-1
and are not stored, so any M is correct.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, gpu, scf, vector

from tessera.errors import LoweringError

from ..kernel import KernelInfo, KernelModule
from ..pipeline_smem import SMEM_ATTR
from .gemm import GemmConfig, params
from .gemm_epilogue import finish, load_f32, store_values
from .gemm_ir import (
    DTYPE_BYTES,
    Ix,
    constant,
    element,
    f32,
    f32_const,
    for_op,
    if_op,
    index,
    warp_sum,
)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _width(contiguous: int, dtype: str) -> int:
    """Elements per load: 16 bytes where the rows allow it, else 8, 4 or 2 bytes."""
    size = DTYPE_BYTES[dtype]
    for bytes_ in (16, 8, 4, 2):
        vec = bytes_ // size
        if vec >= 1 and contiguous % vec == 0:
            return vec
    return 1


def _columns_per_block(cfg: GemmConfig) -> int:
    g = cfg.gemv
    if cfg.transpose_w:
        return g.warps * g.cols
    return g.warps * g.cols * _width(cfg.N, cfg.dtype)


def column_blocks(cfg: GemmConfig) -> int:
    """The blocks that cover the N columns (grid x)."""
    return _cdiv(cfg.N, _columns_per_block(cfg))


def launch(cfg: GemmConfig, name: str, smem: int) -> KernelInfo:
    g = cfg.gemv
    grid = (str(column_blocks(cfg)), f"cdiv(M, {g.rows})", "1")
    return KernelInfo(name, params(cfg), grid, (g.warps * 32, 1, 1), smem)


def check_tile(cfg: GemmConfig) -> None:
    g = cfg.gemv
    if min(g.rows, g.cols, g.warps, g.unroll) < 1:
        raise LoweringError(f"bad gemv tile {g}: every field must be >= 1")
    if not cfg.transpose_w and (32 % g.cols):
        raise LoweringError(f"bad gemv tile {g}: with w as [K, N], cols must divide 32")


def emit(km: KernelModule, cfg: GemmConfig, name: str) -> int:
    g = cfg.gemv
    check_tile(cfg)
    function, block = km.add_kernel(name, params(cfg))
    with ir.InsertionPoint(block):
        args = list(block.arguments)
        sets = len(cfg.weights)
        bias = args[1 + sets] if cfg.has_bias else None
        gemv = Gemv(cfg, args[0], args[1 : 1 + sets], bias)
        gemv.start(args[-1])
        if cfg.transpose_w:
            gemv.store_rows_of_w(args[-2], *gemv.rows_of_w())
        else:
            gemv.columns_of_w(args[-2])
        gpu.ReturnOp([])
    function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 0)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([g.warps * 32, 1, 1])
    return 0


class Gemv:
    """The GEMV of one block: ``start`` (rows, lanes, warps), then for w as [N, K]
    ``rows_of_w`` (the K loop and warp reduction: the f32 sums every lane holds) and an
    epilogue that consumes them (``store_rows_of_w`` here, the greedy head's argmax in
    ``greedy_head``), or for w as [K, N] ``columns_of_w`` (loop and store in one)."""

    def __init__(
        self,
        cfg: GemmConfig,
        x: ir.Value,
        weights: list[ir.Value],
        bias: ir.Value | None,
    ) -> None:
        self.cfg, self.g = cfg, cfg.gemv
        self.x, self.weights, self.bias = x, weights, bias
        self.et = element(cfg.dtype)

    def _load(self, buffer: ir.Value, at: ir.Value, vec: int) -> ir.Value:
        """``vec`` elements at ``buffer[at]`` as an f32 vector (one aligned load)."""
        raw = vector.load(
            ir.VectorType.get([vec], self.et),
            buffer,
            [at],
            alignment=vec * DTYPE_BYTES[self.cfg.dtype],
        )
        if self.cfg.dtype == "f32":
            return raw
        return arith.extf(ir.VectorType.get([vec], f32()), raw)

    def start(self, m_arg: ir.Value, block_x: ir.Value | None = None) -> None:
        """Index setup at the top of the kernel: M (the i32 ``m_arg``), lane, warp, and the
        block's ``rows`` of x (``read_rows``: clamped to M-1, so always in bounds).
        ``block_x``: the block's place among this GEMV's column blocks (default: its grid
        x index; a kernel serving several GEMVs passes the offset one)."""
        ix = self.ix = Ix.at_top()
        self.block_x = gpu.block_id(gpu.Dimension.x) if block_x is None else block_x
        self.M = arith.index_cast(index(), m_arg)
        tid = gpu.thread_id(gpu.Dimension.x)
        self.lane, self.warp = ix.rem(tid, 32), ix.div(tid, 32)
        first_row = ix.mul(gpu.block_id(gpu.Dimension.y), self.g.rows)
        last = ix.sub(self.M, 1)
        self.rows = [ix.add(first_row, r) for r in range(self.g.rows)]
        # rows past M re-read row M-1 (in bounds) and are never stored
        self.read_rows = [ix.min(r, last) for r in self.rows]

    def rows_of_w(self) -> tuple[list[ir.Value], list[ir.Value]]:
        """w as [N, K]: lanes split K, the warp owns ``cols`` columns. Returns the f32 sums,
        held by every lane, at ``(set * rows + r) * cols + c`` (set 1: the gated ``w2``),
        and the warp's ``cols`` column indices (ascending; past N at the edge)."""
        ix, cfg, g, lane = self.ix, self.cfg, self.g, self.lane
        K, N = cfg.K, cfg.N
        vec = _width(K, cfg.dtype)
        steps = _cdiv(_cdiv(K, vec), 32)
        iterations = _cdiv(steps, g.unroll)
        masked = (K // vec) % 32 != 0 or steps % g.unroll != 0
        first_col = ix.mul(ix.add(ix.mul(self.block_x, g.warps), self.warp), g.cols)
        cols = [ix.add(first_col, c) for c in range(g.cols)]
        read_cols = [ix.min(c, N - 1) for c in cols]
        sets = len(self.weights)
        count = sets * g.rows * g.cols
        vzero = constant(
            ir.VectorType.get([vec], f32()),
            ir.DenseElementsAttr.get_splat(
                ir.VectorType.get([vec], f32()), ir.FloatAttr.get(f32(), 0.0)
            ),
        )
        loop = for_op(ix.c(0), ix.c(iterations), ix.c(1), [vzero] * count)
        with ir.InsertionPoint(loop.body):
            acc = list(loop.inner_iter_args)
            for u in range(g.unroll):
                step = ix.add(ix.mul(loop.induction_variable, g.unroll), u)
                k = ix.mul(ix.add(lane, ix.mul(step, 32)), vec)
                valid = ix.lt(k, K) if masked else None
                if valid is not None:
                    k = ix.select(valid, k, 0)
                xs = []
                for read_row in self.read_rows:
                    value = self._load(self.x, ix.add(ix.mul(read_row, K), k), vec)
                    xs.append(arith.select(valid, value, vzero) if valid is not None else value)
                for s, w in enumerate(self.weights):
                    for c, col in enumerate(read_cols):
                        wv = self._load(w, ix.add(ix.mul(col, K), k), vec)
                        for r in range(g.rows):
                            at = (s * g.rows + r) * g.cols + c
                            acc[at] = vector.fma(xs[r], wv, acc[at])
            scf.YieldOp(acc)
        sums = []
        for value in loop.results:
            total = vector.reduction(f32(), vector.CombiningKind.ADD, value)
            sums.append(warp_sum(total, [16, 8, 4, 2, 1]))
        return sums, cols

    def store_rows_of_w(self, y: ir.Value, sums: list[ir.Value], cols: list[ir.Value]) -> None:
        """The GEMV's epilogue for ``rows_of_w``: y[row, col] = finish(sums), rounded."""
        ix, cfg, g, lane = self.ix, self.cfg, self.g, self.lane
        N = cfg.N
        # every lane holds every sum; lane (r * cols + c) % 32 stores (r, c)
        for r, row in enumerate(self.rows):
            for c, col in enumerate(cols):
                at = r * g.cols + c
                per_set = g.rows * g.cols
                gate = sums[at]
                up = sums[per_set + at] if cfg.gated else None
                mine = arith.cmpi(arith.CmpIPredicate.eq, lane, ix.c(at % 32))
                keep = arith.andi(mine, arith.andi(ix.lt(row, self.M), ix.lt(col, N)))
                store = if_op(keep)
                with ir.InsertionPoint(store.then_block):
                    b = load_f32(self.bias, col, cfg.dtype) if self.bias is not None else None
                    value = finish(cfg, gate, up, b)
                    store_values(y, ix.add(ix.mul(row, N), col), [value], cfg.dtype)
                    scf.YieldOp([])

    def columns_of_w(self, y: ir.Value) -> None:
        """w as [K, N]: ``cols`` lanes own runs of ``vec`` columns, the rest split K; stores
        y."""
        ix, cfg, g, lane = self.ix, self.cfg, self.g, self.lane
        K, N = cfg.K, cfg.N
        vec = _width(N, cfg.dtype)
        k_lanes = 32 // g.cols
        steps = _cdiv(K, k_lanes)
        iterations = _cdiv(steps, g.unroll)
        masked = K % k_lanes != 0 or steps % g.unroll != 0
        column_lane, k_lane = ix.rem(lane, g.cols), ix.div(lane, g.cols)
        warp_first = ix.add(ix.mul(self.block_x, g.warps), self.warp)
        col = ix.mul(ix.add(ix.mul(warp_first, g.cols), column_lane), vec)
        col_ok = ix.lt(col, N)
        read_col = ix.select(col_ok, col, 0)
        vtype = ir.VectorType.get([vec], f32())
        vzero = constant(vtype, ir.DenseElementsAttr.get_splat(vtype, ir.FloatAttr.get(f32(), 0.0)))
        sets = len(self.weights)
        loop = for_op(ix.c(0), ix.c(iterations), ix.c(1), [vzero] * (sets * g.rows))
        with ir.InsertionPoint(loop.body):
            acc = list(loop.inner_iter_args)
            for u in range(g.unroll):
                step = ix.add(ix.mul(loop.induction_variable, g.unroll), u)
                k = ix.add(k_lane, ix.mul(step, k_lanes))
                valid = ix.lt(k, K) if masked else None
                if valid is not None:
                    k = ix.select(valid, k, 0)
                xs = []
                for read_row in self.read_rows:
                    value = load_f32(self.x, ix.add(ix.mul(read_row, K), k), cfg.dtype)
                    if valid is not None:
                        value = arith.select(valid, value, f32_const(0.0))
                    xs.append(vector.broadcast(vtype, value))
                for s, w in enumerate(self.weights):
                    wv = self._load(w, ix.add(ix.mul(k, N), read_col), vec)
                    for r in range(g.rows):
                        acc[s * g.rows + r] = vector.fma(xs[r], wv, acc[s * g.rows + r])
            scf.YieldOp(acc)
        offsets = [o for o in (1, 2, 4, 8, 16) if o >= g.cols]
        sums = [
            [warp_sum(vector.extract(v, [], [e]), offsets) for e in range(vec)]
            for v in loop.results
        ]
        first_lane = ix.lt(k_lane, 1)
        for r, row in enumerate(self.rows):
            keep = arith.andi(first_lane, arith.andi(ix.lt(row, self.M), col_ok))
            store = if_op(keep)
            with ir.InsertionPoint(store.then_block):
                values = []
                for e in range(vec):
                    up = sums[g.rows + r][e] if cfg.gated else None
                    b = (
                        load_f32(self.bias, ix.add(col, e), cfg.dtype)
                        if self.bias is not None
                        else None
                    )
                    values.append(finish(cfg, sums[r][e], up, b))
                store_values(y, ix.add(ix.mul(row, N), col), values, cfg.dtype)
                scf.YieldOp([])
