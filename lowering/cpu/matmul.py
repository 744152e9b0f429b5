"""The register-tiled matmul microkernel: C[m, n] = Σ_k A[m, k]·B[n, k] with both operands read
along K (torch Linear's layout, and q·kᵀ in attention), accumulated in f32.

Each microtile keeps ``mr × nr`` accumulator vectors, one per output element, that run along K:
a step loads ``mr`` vectors of A and ``nr`` of B and issues ``mr·nr`` fused multiply-adds (for
bf16 on CPUs with AVX512-BF16, ``vdpbf16ps``: 32 products per instruction, exact in f32). The
accumulators are summed across lanes at the end of a K block by a shuffle tree that turns
``lanes`` accumulators into one vector of their sums, so the reduction costs about three
instructions per output element. Neither operand needs packing: B's rows are contiguous in
memory, which is the layout every weight of a torch model has.

Blocking: A rows in blocks of ``mc`` (kept in L2), K in blocks of ``kc`` (one microtile's rows of
B, ``nr × kc``, stay in L1 while the tile sweeps down A's block). Partial sums of earlier K blocks
go to an f32 scratch matrix; the last block hands the total to the caller's epilogue, which
applies bias, activation and rounding and stores the result.

M is dynamic (rows past the last full ``mr`` tile are done one at a time); N and K are static
(the last N tile is narrower, the last K step masked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import vectors
from .builder import Kernel
from .host import Host
from .lane_reduce import Transform, reduce_tile

# (kernel, row, first column, width, one vector<width x f32> of totals per B operand)
Epilogue = Callable[[Kernel, str, str, int, list[str]], None]


@dataclass(frozen=True)
class Operand:
    """A memref read row by row along its contiguous last axis: element (row, col) is
    ``name[*prefix, row_offset + row, col]``; with ``row_limit`` set, rows past it read the
    limit row instead (the caller masks those results), so loads stay in bounds."""

    name: str
    type: str
    dtype: str
    prefix: tuple[str, ...] = ()
    row_offset: int | str = 0
    row_limit: str | None = None

    def index(self, k: Kernel, row: str, col: str) -> str:
        row = k.add(row, self.row_offset) if self.row_offset != 0 else row
        if self.row_limit is not None:
            row = k.min(row, self.row_limit)
        return ", ".join([*self.prefix, row, col])


@dataclass(frozen=True)
class Tiling:
    mr: int = 2
    nr: int = 8
    kc: int = 512
    mc: int = 128


def default_tiling(dtype: str, host: Host) -> Tiling:
    """Block sizes measured best on an AVX-512 Zen 5 core (bench/cpu_kernels.py): a K block
    is 4 KiB of each row (so a 2 × 8 microtile's rows stay in L1), and 128 rows of A are
    reused from L2 across all of B's rows. A microtile's columns are summed across the lanes
    of one vector (``lane_reduce``), so there are at most as many as a vector has lanes."""
    columns = min(8, host.lanes)
    if dtype == "bf16" and host.bf16_dot:
        return Tiling(mr=2, nr=columns, kc=2048, mc=128)
    return Tiling(mr=2, nr=columns, kc=1024, mc=128)


@dataclass(frozen=True)
class _Step:
    """How one K step loads and multiplies for a pair of operand dtypes."""

    width: int  # K elements per step
    bf16_dot: bool

    def load_type(self, dtype: str) -> str:
        return f"vector<{self.width}x{dtype}>"


def _step_for(a: Operand, bs: Sequence[Operand], host: Host) -> _Step:
    dtypes = {a.dtype, *(b.dtype for b in bs)}
    if dtypes == {"bf16"} and host.bf16_dot:
        return _Step(2 * host.lanes, True)
    return _Step(host.lanes, False)


def _acc_type(host: Host) -> str:
    return f"vector<{host.lanes}xf32>"


def _load(
    k: Kernel, operand: Operand, row: str, col: str, step: _Step, host: Host, tail: int | None
) -> str:
    """One step's vector of ``operand`` at (row, col), as f32 unless the dot path takes bf16."""
    vtype = step.load_type(operand.dtype)
    if tail is None:
        value = k.op(
            "ld",
            f"vector.load {operand.name}[{operand.index(k, row, col)}] : {operand.type}, {vtype}",
        )
    else:
        mask = vectors.mask(k, step.width, tail)
        zero = k.splat(0.0, vtype)
        value = k.op(
            "ld",
            f"vector.maskedload {operand.name}[{operand.index(k, row, col)}], "
            f"{mask}, {zero} : "
            f"{operand.type}, vector<{step.width}xi1>, {vtype} into {vtype}",
        )
    if step.bf16_dot or operand.dtype == "f32":
        return value
    return k.op("cv", f"arith.extf {value} : {vtype} to {_acc_type(host)}")


def _multiply_add(k: Kernel, a: str, b: str, acc: str, step: _Step, host: Host) -> str:
    if step.bf16_dot:
        return k.op(
            "acc",
            f"x86vector.avx512.dot {acc}, {a}, {b} : "
            f"vector<{step.width}xbf16> -> {_acc_type(host)}",
        )
    return k.op("acc", f"vector.fma {a}, {b}, {acc} : {_acc_type(host)}")


@dataclass
class _Plan:
    a: Operand
    bs: list[Operand]
    m: str
    n: int
    depth: int
    epilogue: Epilogue
    transforms: Sequence[Transform | None]
    columns: tuple[str, str] | None
    scratch: str | None
    scratch_type: str
    step: _Step
    tiling: Tiling
    host: Host

    @property
    def main_depth(self) -> int:
        return self.depth - self.depth % self.step.width

    @property
    def tail(self) -> int:
        return self.depth % self.step.width

    @property
    def blocks(self) -> int:
        kc = self.tiling.kc
        return max(1, -(-self.main_depth // kc))


def emit_matmul(
    k: Kernel,
    a: Operand,
    m: str,
    bs: Sequence[Operand],
    n: int,
    depth: int,
    epilogue: Epilogue,
    host: Host,
    tiling: Tiling | None = None,
    columns: tuple[str, str] | None = None,
    transforms: Sequence[Transform | None] = (),
) -> None:
    """Emits C = A·Bᵀ for A [m, depth] and each B [n, depth] (at its row offset).

    ``epilogue`` receives, for each row and tile of columns, the f32 totals of every B.
    ``columns`` limits the work to columns [begin, end): begin a multiple of the microtile
    width (``column_tile``), end such a multiple or n. ``transforms[o]``, an elementwise
    function, maps B operand o's totals before the epilogue sees them."""
    step = _step_for(a, bs, host)
    tiling = tiling or default_tiling(a.dtype, host)
    if tiling.kc % step.width:
        tiling = Tiling(
            tiling.mr, tiling.nr, tiling.kc - tiling.kc % step.width or step.width, tiling.mc
        )
    width = len(bs) * n
    scratch_type = f"memref<?x{width}xf32>"
    plan = _Plan(
        a,
        list(bs),
        m,
        n,
        depth,
        epilogue,
        transforms,
        columns,
        None,
        scratch_type,
        step,
        tiling,
        host,
    )
    if plan.blocks > 1:
        # Freed by the buffer-deallocation pipeline (which rejects explicit deallocs).
        plan.scratch = k.op("scratch", f"memref.alloc({m}) : {scratch_type}")
    with k.loop(0, m, tiling.mc) as row_blocks:
        block_end = k.min(k.add(row_blocks.iv, tiling.mc), m)
        block_rows = k.sub(block_end, row_blocks.iv)
        full_end = k.add(row_blocks.iv, k.floor_to(block_rows, tiling.mr))
        if plan.blocks == 1:
            _emit_block(k, plan, row_blocks.iv, full_end, block_end, None)
        else:
            with k.loop(0, plan.blocks, 1) as k_blocks:
                _emit_block(k, plan, row_blocks.iv, full_end, block_end, k_blocks.iv)


def column_tile(operands: int, tiling: Tiling) -> int:
    """Columns of each B operand in one microtile."""
    return max(1, tiling.nr // operands)


def _emit_block(
    k: Kernel, plan: _Plan, row_start: str, full_end: str, row_end: str, k_block: str | None
) -> None:
    """All microtiles of one (row block, K block)."""
    width = column_tile(len(plan.bs), plan.tiling)
    full_n = plan.n - plan.n % width
    tail = plan.n % width
    if plan.columns is None:
        if full_n:
            with k.loop(0, full_n, width) as columns:
                _emit_rows(k, plan, row_start, full_end, row_end, columns.iv, width, k_block)
        if tail:
            _emit_rows(k, plan, row_start, full_end, row_end, k.index(full_n), tail, k_block)
        return
    begin, end = plan.columns
    if full_n:
        with k.loop(begin, k.min(end, full_n), width) as columns:
            _emit_rows(k, plan, row_start, full_end, row_end, columns.iv, width, k_block)
    if tail:
        with k.if_(k.cmp("eq", end, plan.n)):
            _emit_rows(k, plan, row_start, full_end, row_end, k.index(full_n), tail, k_block)


def _emit_rows(
    k: Kernel,
    plan: _Plan,
    row_start: str,
    full_end: str,
    row_end: str,
    column: str,
    cols: int,
    k_block: str | None,
) -> None:
    with k.loop(row_start, full_end, plan.tiling.mr) as rows:
        _emit_tile(k, plan, rows.iv, plan.tiling.mr, column, cols, k_block)
    if plan.tiling.mr > 1:
        with k.loop(full_end, row_end, 1) as rows:
            _emit_tile(k, plan, rows.iv, 1, column, cols, k_block)


def _emit_tile(
    k: Kernel, plan: _Plan, row: str, rows: int, column: str, cols: int, k_block: str | None
) -> None:
    """One microtile: accumulate over the K block, reduce, hand to scratch or epilogue."""
    host, step = plan.host, plan.step
    acc_type = _acc_type(host)
    row_index = [k.add(row, i) for i in range(rows)]
    b_rows = [[k.add(column, j) for j in range(cols)] for _ in plan.bs]
    count = rows * len(plan.bs) * cols
    zero = k.splat(0.0, acc_type)
    if k_block is None:
        k_start, k_end = k.index(0), k.index(plan.main_depth)
    else:
        k_start = k.mul(k_block, plan.tiling.kc)
        k_end = k.min(k.add(k_start, plan.tiling.kc), plan.main_depth)

    def step_body(col: str, tail: int | None, accs: list[str]) -> list[str]:
        a_vectors = [_load(k, plan.a, r, col, step, host, tail) for r in row_index]
        b_vectors = [
            [_load(k, b, r, col, step, host, tail) for r in rows_b]
            for b, rows_b in zip(plan.bs, b_rows, strict=True)
        ]
        out = []
        index = 0
        for a_vector in a_vectors:
            for b_list in b_vectors:
                for b_vector in b_list:
                    out.append(_multiply_add(k, a_vector, b_vector, accs[index], step, host))
                    index += 1
        return out

    accs = [zero] * count
    if plan.main_depth:
        with k.loop(k_start, k_end, step.width, [(zero, acc_type)] * count) as steps:
            steps.yield_(step_body(steps.iv, None, steps.args))
        accs = steps.results
    if plan.tail:
        tail_column = k.index(plan.main_depth)
        if k_block is None:
            accs = step_body(tail_column, plan.tail, accs)
        else:
            is_last = k.cmp("eq", k_block, plan.blocks - 1)
            with k.if_then(is_last, [acc_type] * count) as branch:
                branch.then_values = step_body(tail_column, plan.tail, accs)
            with k.else_(branch):
                branch.else_values = list(accs)
            accs = branch.results
    nested = [
        [
            accs[(r * len(plan.bs) + o) * cols : (r * len(plan.bs) + o + 1) * cols]
            for o in range(len(plan.bs))
        ]
        for r in range(rows)
    ]
    if k_block is None:
        totals = reduce_tile(k, nested, host.lanes, plan.transforms)
    else:
        totals = reduce_tile(k, nested, host.lanes)
    if k_block is None:
        for r in range(rows):
            plan.epilogue(k, row_index[r], column, cols, totals[r])
        return
    _emit_partial(k, plan, row_index, column, cols, totals, k_block)


def _emit_partial(
    k: Kernel,
    plan: _Plan,
    row_index: list[str],
    column: str,
    cols: int,
    totals: list[list[str]],
    k_block: str,
) -> None:
    """Adds earlier K blocks' sums; the last block runs the epilogue, others store."""
    vtype = f"vector<{cols}xf32>"
    scratch, stype = plan.scratch, plan.scratch_type
    offsets = [column if o == 0 else k.add(column, o * plan.n) for o in range(len(plan.bs))]
    is_first = k.cmp("eq", k_block, 0)
    is_last = k.cmp("eq", k_block, plan.blocks - 1)
    flat = [t for row in totals for t in row]
    with k.if_then(is_first, [vtype] * len(flat)) as branch:
        branch.then_values = flat
    with k.else_(branch):
        summed = []
        for r, row in enumerate(totals):
            for o, total in enumerate(row):
                earlier = k.op(
                    "ld", f"vector.load {scratch}[{row_index[r]}, {offsets[o]}] : {stype}, {vtype}"
                )
                summed.append(k.op("acc", f"arith.addf {earlier}, {total} : {vtype}"))
        branch.else_values = summed
    merged = branch.results
    width = len(plan.bs)
    with k.if_(is_last):
        vtype = f"vector<{cols}xf32>"
        for r in range(len(totals)):
            final = list(merged[r * width : (r + 1) * width])
            for o, transform in enumerate(plan.transforms):
                if transform is not None:
                    final[o] = transform(k, final[o], vtype)
            plan.epilogue(k, row_index[r], column, cols, final)
    with k.otherwise():
        for r in range(len(totals)):
            for o in range(width):
                k.line(
                    f"vector.store {merged[r * width + o]}, {scratch}[{row_index[r]}, "
                    f"{offsets[o]}] : {stype}, {vtype}"
                )
