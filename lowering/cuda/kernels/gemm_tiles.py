"""Global → shared tiles of the GEMM kernels: how the threads split a tile into cp.async
copies, which of them fall outside the matrix, and where each lands in shared memory.

A tile is ``rows x cols`` elements of a row-major matrix whose rows are either the M or N
dimension ("outer", with K contiguous: x, and w when ``transpose_w``) or the K dimension
(w as [K, N], N contiguous). Each copy moves ``vec`` elements (16 bytes when the contiguous
dimension allows it, else 8 or 4); thread ``t`` takes copies ``t, t + T, t + 2T, ...``.

Copies that fall outside the matrix (rows past M or N, columns past K or N) are issued with
``src_elements`` 0 from a clamped in-bounds address: cp.async then reads nothing and writes
zeros, which the MMA adds harmlessly.

Shared tiles of the tensor-core kernel are swizzled: the 16-byte chunk ``c`` of row ``r``
is stored at chunk ``c ^ f(r)``, with ``f`` chosen so that any 8 consecutive rows at one
logical chunk sit in 8 different 16-byte bank groups. ldmatrix reads 8 such rows per
matrix, and cp.async writes whole rows, so neither conflicts. (Rows of 128 bytes or more:
``f(r) = r % 8``; shorter rows share a 128-byte line, and ``f`` steps once per line.)
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import gpu, nvgpu

from tessera.errors import LoweringError

from .gemm_ir import DTYPE_BYTES, Ix, all_of


def copy_width(contiguous: int, dtype: str) -> int:
    """Elements per cp.async (16, 8 or 4 bytes) that evenly divide a row of ``contiguous``
    elements, so every copy stays aligned."""
    size = DTYPE_BYTES[dtype]
    for bytes_ in (16, 8, 4):
        vec = bytes_ // size
        if vec >= 1 and contiguous % vec == 0:
            return vec
    raise LoweringError(
        f"a {dtype} matrix with rows of {contiguous} elements cannot be copied with cp.async "
        "(it needs rows of an even number of 16-bit elements)"
    )


@dataclass(frozen=True)
class SharedTile:
    """A tile in shared memory: ``rows x cols`` logical elements, stored swizzled
    (``swizzle``) or with ``pad`` elements after each row."""

    rows: int
    cols: int
    dtype: str
    swizzle: bool = True
    pad: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols + self.pad)

    @property
    def chunk(self) -> int:
        """Elements per 16-byte chunk."""
        return 16 // DTYPE_BYTES[self.dtype]

    def column(self, ix: Ix, row: ir.Value | int, col: ir.Value | int) -> ir.Value:
        """Where logical column ``col`` of ``row`` is stored (``col`` is a multiple of the
        access width, which never crosses a 16-byte chunk)."""
        if not self.swizzle:
            return ix.add(0, col)
        chunks = self.cols // self.chunk
        rows_per_line = max(1, 8 // chunks)
        pattern = ix.rem(ix.div(row, rows_per_line), min(chunks, 8))
        chunk = ix.div(col, self.chunk)
        within = ix.rem(col, self.chunk)
        return ix.add(ix.mul(ix.xor(chunk, pattern), self.chunk), within)


@dataclass(frozen=True)
class CopyUnit:
    """One copy of one thread: destination row and column, the source element index at
    k tile 0, the offset along K inside the tile, and the validity that does not change
    with the k tile (None: always valid)."""

    dst_row: ir.Value
    dst_col: ir.Value
    base: ir.Value
    k_offset: ir.Value
    valid: ir.Value | None


@dataclass(frozen=True)
class TileCopies:
    """A thread's copies of one operand tile, and how they advance along K."""

    tile: SharedTile
    units: tuple[CopyUnit, ...]
    vec: int
    step: int
    block_k: int
    K: int

    def issue(
        self, ix: Ix, kt: ir.Value, source: ir.Value, destination: ir.Value
    ) -> list[ir.Value]:
        """The copies of k tile ``kt`` (inside the main loop); returns their tokens."""
        tokens = []
        for unit in self.units:
            at, valid = self.source(ix, kt, unit)
            count = ix.select(valid, self.vec, 0) if valid is not None else None
            tokens.append(
                nvgpu.device_async_copy(
                    destination,
                    [unit.dst_row, unit.dst_col],
                    source,
                    [at],
                    ir.IntegerAttr.get(ir.IndexType.get(), self.vec),
                    src_elements=count,
                    bypass_l1=True if self.vec * DTYPE_BYTES[self.tile.dtype] == 16 else None,
                )
            )
        return tokens

    def source(self, ix: Ix, kt: ir.Value, unit: CopyUnit) -> tuple[ir.Value, ir.Value | None]:
        """Where ``unit`` reads in k tile ``kt`` (an in-bounds element index even when the
        copy falls outside the matrix) and whether it reads anything (None: always)."""
        at = ix.add(unit.base, ix.mul(kt, self.step))
        conditions = [unit.valid] if unit.valid is not None else []
        if self.K % self.block_k != 0:
            inside = ix.lt(ix.add(ix.mul(kt, self.block_k), unit.k_offset), self.K)
            at = ix.select(inside, at, 0)
            conditions.append(inside)
        return at, all_of(conditions)


def _units_of(tile: SharedTile, vec: int, threads: int) -> int:
    total = tile.rows * tile.cols // vec
    if total % threads:
        raise LoweringError(
            f"a {tile.rows}x{tile.cols} tile in copies of {vec} elements does not split "
            f"evenly over {threads} threads; choose another tile"
        )
    return total // threads


def outer_rows(
    ix: Ix,
    tid: ir.Value,
    threads: int,
    tile: SharedTile,
    first: ir.Value,
    limit: ir.Value | int,
    K: int,
) -> TileCopies:
    """Copies of rows ``first..first+rows`` (of ``limit``) of a [limit, K] matrix, K
    contiguous, for k tiles of ``tile.cols``."""
    vec = copy_width(K, tile.dtype)
    per_row = tile.cols // vec
    always_inside = isinstance(limit, int) and limit % tile.rows == 0
    units = []
    for j in range(_units_of(tile, vec, threads)):
        u = ix.add(tid, j * threads)
        row, col = ix.div(u, per_row), ix.mul(ix.rem(u, per_row), vec)
        global_row = ix.add(first, row)
        valid = None if always_inside else ix.lt(global_row, limit)
        if valid is not None:
            global_row = ix.select(valid, global_row, 0)
        base = ix.add(ix.mul(global_row, K), col)
        units.append(CopyUnit(row, tile.column(ix, row, col), base, col, valid))
    return TileCopies(tile, tuple(units), vec, tile.cols, tile.cols, K)


def k_rows(
    ix: Ix, tid: ir.Value, threads: int, tile: SharedTile, first: ir.Value, N: int, K: int
) -> TileCopies:
    """Copies of a [K, N] matrix (N contiguous): rows are k, columns ``first..first+cols``."""
    vec = copy_width(N, tile.dtype)
    per_row = tile.cols // vec
    always_inside = N % tile.cols == 0
    units = []
    for j in range(_units_of(tile, vec, threads)):
        u = ix.add(tid, j * threads)
        row, col = ix.div(u, per_row), ix.mul(ix.rem(u, per_row), vec)
        global_col = ix.add(first, col)
        valid = None if always_inside else ix.lt(global_col, N)
        if valid is not None:
            global_col = ix.select(valid, global_col, 0)
        base = ix.add(ix.mul(row, N), global_col)
        units.append(CopyUnit(row, tile.column(ix, row, col), base, row, valid))
    return TileCopies(tile, tuple(units), vec, tile.rows * N, tile.rows, K)


def block_origin(
    ix: Ix, M: ir.Value, N: int, block_m: int, block_n: int, group_m: int
) -> tuple[ir.Value, ir.Value]:
    """(m0, n0) of this block in a grid of cdiv(M, block_m) * cdiv(N, block_n) blocks,
    numbered along M first within groups of ``group_m`` row tiles: the blocks that run at
    the same time then share the w tiles (read once from memory, then from L2)."""
    pid = gpu.block_id(gpu.Dimension.x)
    m_tiles = ix.div(ix.add(M, block_m - 1), block_m)
    width = group_m * (-(-N // block_n))
    first = ix.mul(ix.div(pid, width), group_m)
    size = ix.min(ix.sub(m_tiles, first), group_m)
    local = ix.rem(pid, width)
    tm = ix.add(first, ix.rem(local, size))
    tn = ix.div(local, size)
    return ix.mul(tm, block_m), ix.mul(tn, block_n)
