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

``weights_before_wait`` (w as [N, K], a device with programmatic launch): the loads of w of
the K loop's first iteration go out before the kernel's grid wait (``grid_dependency.py``),
and the first iteration consumes them after it. Launched programmatically, a block placed
while the kernel before it is still finishing streams its first weights meanwhile (all of
them where K fits one iteration), where the wait at the top would leave the memory system
idle between the two kernels; launched plainly, the wait returns at once and nothing changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from mlir import ir
from mlir.dialects import arith, gpu, memref, scf, vector

from tessera.errors import LoweringError
from tessera.runtime.manifest import ArgRef

from ..device import Device
from ..grid_dependency import wait_for_predecessors
from ..kernel import KernelInfo, KernelModule, mark_reads_before_wait
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
        return g.warps // g.splits * g.cols
    return g.warps * g.cols * _width(cfg.N, cfg.dtype)


def column_blocks(cfg: GemmConfig) -> int:
    """The blocks that cover the N columns (grid x)."""
    return _cdiv(cfg.N, _columns_per_block(cfg))


def launch(cfg: GemmConfig, name: str, smem: int) -> KernelInfo:
    g = cfg.gemv
    grid = (str(column_blocks(cfg)), f"cdiv(M, {g.rows})", "1")
    return KernelInfo(name, params(cfg), grid, (g.warps * 32, 1, 1), smem, early_weights(cfg))


def early_weights(cfg: GemmConfig) -> tuple[str, ...]:
    """The parameters the kernel reads before its grid wait."""
    return cfg.weights if cfg.weights_before_wait else ()


def check_tile(cfg: GemmConfig) -> None:
    g = cfg.gemv
    if min(g.rows, g.cols, g.warps, g.unroll, g.splits) < 1:
        raise LoweringError(f"bad gemv tile {g}: every field must be >= 1")
    if g.warps % g.splits:
        raise LoweringError(f"bad gemv tile {g}: splits must divide warps")
    if g.splits > 1 and not cfg.transpose_w:
        raise LoweringError(f"bad gemv tile {g}: only w as [N, K] splits K across warps")
    if not cfg.transpose_w and (32 % g.cols):
        raise LoweringError(f"bad gemv tile {g}: with w as [K, N], cols must divide 32")
    if cfg.weights_before_wait and not cfg.transpose_w:
        raise LoweringError("a GEMV reads w before its grid wait only with w as [N, K]")


def tuned_tile(cfg: GemmConfig, entry: Mapping[str, int] | None) -> GemmConfig:
    """``cfg`` (a chosen GEMV config) with the tile a tuning entry names (``tuning.gemv_key``:
    any of cols, warps, unroll, splits; the row class stays), or as it is without one."""
    if entry is None or cfg.family != "gemv":
        return cfg
    known = {"cols", "warps", "unroll", "splits"}
    if not set(entry) <= known:
        unknown = ", ".join(sorted(set(entry) - known))
        raise LoweringError(f"a GEMV tuning entry names {unknown}; it takes {sorted(known)}")
    tuned = dataclasses.replace(cfg, gemv=dataclasses.replace(cfg.gemv, **entry))
    check_tile(tuned)
    return tuned


def reading_weights_early(cfg: GemmConfig, device: Device, weights: Sequence[object]) -> GemmConfig:
    """``cfg`` (a chosen config) reading w before its grid wait where it can: a one-row GEMV
    with w as [N, K] on a device with programmatic launch, every one of its ``weights``
    bindings a model weight (``ArgRef`` of kind ``weight``: nothing in the program writes it).
    The 8-row builds keep the wait at their top: their early weights spill registers
    (255 registers and 16-36 bytes of spills at Gemma-2B's shapes, none without)."""
    if cfg.family != "gemv" or not cfg.transpose_w or not device.programmatic_launch:
        return cfg
    if cfg.gemv.rows != 1:
        return cfg
    constant = all(isinstance(w, ArgRef) and w.kind == "weight" for w in weights)
    return dataclasses.replace(cfg, weights_before_wait=constant)


def check_early_reads(km: KernelModule, cfg: GemmConfig) -> None:
    if cfg.weights_before_wait and not km.device.programmatic_launch:
        raise LoweringError(
            f"{km.arch} has no programmatic launch: a GEMV there cannot read w before a grid wait"
        )


def emit(km: KernelModule, cfg: GemmConfig, name: str) -> int:
    g = cfg.gemv
    check_tile(cfg)
    check_early_reads(km, cfg)
    function, block = km.add_kernel(name, params(cfg))
    with ir.InsertionPoint(block):
        args = list(block.arguments)
        sets = len(cfg.weights)
        bias = args[1 + sets] if cfg.has_bias else None
        gemv = Gemv(cfg, args[0], args[1 : 1 + sets], bias)
        gemv.start(args[-1])
        if cfg.transpose_w:
            partials = split_sums(km, name, cfg)
            gemv.store_rows_of_w(args[-2], *gemv.rows_of_w(partials))
        else:
            gemv.columns_of_w(args[-2])
        gpu.ReturnOp([])
    function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 0)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([g.warps * 32, 1, 1])
    mark_reads_before_wait(function, params(cfg), early_weights(cfg))
    return 0


def split_sums(km: KernelModule, symbol: str, cfg: GemmConfig) -> ir.Value | None:
    """The shared memory where ``rows_of_w``'s warps that split K leave their sums (one f32
    per warp and sum); None without splits. Call in the kernel's body."""
    g = cfg.gemv
    if g.splits == 1:
        return None
    count = len(cfg.weights) * g.rows * g.cols
    return km.shared_array(f"{symbol}_split_sums", [g.warps, count], f32())


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
        # with split K, whether this warp stores its group's sums (``rows_of_w``)
        self.owner: ir.Value | None = None

    def _load(self, buffer: ir.Value, at: ir.Value, vec: int) -> ir.Value:
        """``vec`` elements at ``buffer[at]`` as an f32 vector (one aligned load)."""
        return self._widen(self._load_raw(buffer, at, vec))

    def _load_raw(self, buffer: ir.Value, at: ir.Value, vec: int) -> ir.Value:
        """``vec`` elements at ``buffer[at]`` in the buffer's type (one aligned load)."""
        return vector.load(
            ir.VectorType.get([vec], self.et),
            buffer,
            [at],
            alignment=vec * DTYPE_BYTES[self.cfg.dtype],
        )

    def _widen(self, raw: ir.Value) -> ir.Value:
        if self.cfg.dtype == "f32":
            return raw
        return arith.extf(ir.VectorType.get(ir.VectorType(raw.type).shape, f32()), raw)

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

    def rows_of_w(self, partials: ir.Value | None = None) -> tuple[list[ir.Value], list[ir.Value]]:
        """w as [N, K]: lanes split K, the warp owns ``cols`` columns. Returns the f32 sums,
        held by every lane, at ``(set * rows + r) * cols + c`` (set 1: the gated ``w2``),
        and the warp's ``cols`` column indices (ascending; past N at the edge).

        With ``splits`` warps a column (``partials``: ``split_sums``' memory), warp ``p`` of
        a column's group takes the unrolled chunks ``p, p + splits, ...`` of its K, and every
        warp of the group returns the same sums, added in the order of ``p``; ``owner`` then
        says which warp of the group stores them."""
        ix, cfg, g, lane = self.ix, self.cfg, self.g, self.lane
        K, N = cfg.K, cfg.N
        vec = _width(K, cfg.dtype)
        steps = _cdiv(_cdiv(K, vec), 32)
        chunks = _cdiv(steps, g.unroll)
        # a warp's chunks: the last is past K for some warps where splits do not divide them
        per_warp = _cdiv(chunks, g.splits)
        masked = (K // vec) % 32 != 0 or steps % g.unroll != 0 or chunks % g.splits != 0
        group, part = ix.div(self.warp, g.splits), ix.rem(self.warp, g.splits)
        first_col = ix.mul(ix.add(ix.mul(self.block_x, g.warps // g.splits), group), g.cols)
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

        def offsets(iteration: ir.Value) -> list[tuple[ir.Value, ir.Value | None]]:
            """Each unrolled step's K offset of this lane in the warp's ``iteration``-th
            chunk, and whether it is inside K."""
            chunk = ix.add(ix.mul(iteration, g.splits), part) if g.splits > 1 else iteration
            out = []
            for u in range(g.unroll):
                step = ix.add(ix.mul(chunk, g.unroll), u)
                k = ix.mul(ix.add(lane, ix.mul(step, 32)), vec)
                valid = ix.lt(k, K) if masked else None
                out.append((k if valid is None else ix.select(valid, k, 0), valid))
            return out

        def w_at(s: int, c: int, k: ir.Value) -> ir.Value:
            """w's vector of weight set ``s`` and column ``c`` at K offset ``k`` (raw)."""
            return self._load_raw(self.weights[s], ix.add(ix.mul(read_cols[c], K), k), vec)

        def accumulate(
            acc: list[ir.Value],
            chunk: list[tuple[ir.Value, ir.Value | None]],
            loaded: list[list[ir.Value]] | None = None,
        ) -> list[ir.Value]:
            """``acc`` plus the products of the ``chunk`` of steps; w loaded here, step by
            step after its x, unless ``loaded`` holds each step's w vectors (set-major)."""
            acc = list(acc)
            for i, (k, valid) in enumerate(chunk):
                xs = []
                for read_row in self.read_rows:
                    value = self._load(self.x, ix.add(ix.mul(read_row, K), k), vec)
                    xs.append(arith.select(valid, value, vzero) if valid is not None else value)
                for s in range(sets):
                    for c in range(g.cols):
                        raw = loaded[i][s * g.cols + c] if loaded else w_at(s, c, k)
                        wv = self._widen(raw)
                        for r in range(g.rows):
                            at = (s * g.rows + r) * g.cols + c
                            acc[at] = vector.fma(xs[r], wv, acc[at])
            return acc

        acc = [vzero] * count
        first = 0
        if self.cfg.weights_before_wait:
            # the first iteration's weights before the wait, its x (which the kernels before
            # this one write) after it
            chunk = offsets(ix.c(0))
            early = [[w_at(s, c, k) for s in range(sets) for c in range(g.cols)] for k, _ in chunk]
            wait_for_predecessors()
            acc = accumulate(acc, chunk, early)
            first = 1
        loop = for_op(ix.c(first), ix.c(per_warp), ix.c(1), acc)
        with ir.InsertionPoint(loop.body):
            chunk = offsets(loop.induction_variable)
            scf.YieldOp(accumulate(list(loop.inner_iter_args), chunk))
        sums = []
        for value in loop.results:
            total = vector.reduction(f32(), vector.CombiningKind.ADD, value)
            sums.append(warp_sum(total, [16, 8, 4, 2, 1]))
        if g.splits > 1:
            if partials is None:
                raise LoweringError(f"gemv tile {g} splits K: rows_of_w needs split_sums")
            sums = self._add_splits(sums, partials, group)
            self.owner = ix.lt(part, 1)
        return sums, cols

    def _add_splits(
        self, sums: list[ir.Value], partials: ir.Value, group: ir.Value
    ) -> list[ir.Value]:
        """Every warp of a column group gets the sum of the group's ``sums``, added in the
        order of the warps (the same bits in every warp)."""
        ix, g = self.ix, self.g
        first = arith.cmpi(arith.CmpIPredicate.eq, self.lane, ix.c(0))
        store = if_op(first)
        with ir.InsertionPoint(store.then_block):
            for i, value in enumerate(sums):
                memref.store(value, partials, [self.warp, ix.c(i)])
            scf.YieldOp([])
        gpu.barrier()
        base = ix.mul(group, g.splits)
        out = []
        for i in range(len(sums)):
            total = memref.load(partials, [base, ix.c(i)])
            for p in range(1, g.splits):
                total = arith.addf(total, memref.load(partials, [ix.add(base, p), ix.c(i)]))
            out.append(total)
        return out

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
                if self.owner is not None:
                    keep = arith.andi(keep, self.owner)
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
