"""Shared-memory tiles of the tensor-core attention kernel: global → shared copies (cp.async)
and the ldmatrix / mma.sync fragments read from them.

A tile holds ``rows`` rows of a [*, dim] operand, ``dim`` padded to a multiple of 16 (the MMA's
k step) plus 8 elements: rows 16 bytes apart modulo 128 put the 8 row addresses of one
ldmatrix phase in 8 distinct bank groups, and one cp.async per 16 bytes lands a warp's stores
in distinct banks too. Padded columns and rows past the end of the sequence are zero-filled by
the copies themselves (cp.async with a source size of 0), so the MMAs read finite zeros there.

Fragment layouts are PTX's for mma.m16n8k16 (A row-major 16x16, B "col" 16x8, C 16x8 f32):
lane l = 4g + q holds C rows g and g + 8, columns 2q and 2q + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import llvm, memref, nvgpu, nvvm

from . import attention_ir as a
from .attention import padded

WARP = 32


@dataclass(frozen=True)
class Lanes:
    """Per-thread indices, computed once at the kernel's start (index typed)."""

    tid: ir.Value
    lane: ir.Value
    warp: ir.Value
    # The row/column of the 16x16 block this lane addresses in each ldmatrix flavour.
    a_row: ir.Value  # Q (A operand, x4): lane % 16
    a_col: ir.Value  # 8 · (lane / 16)
    b_row: ir.Value  # K (B operand, x4 over two n-tiles): lane % 8 + 8 · (lane / 16)
    b_col: ir.Value  # 8 · ((lane / 8) % 2)
    t_row: ir.Value  # V (B operand through .trans): lane % 8 + 8 · ((lane / 8) % 2)
    t_col: ir.Value  # 8 · (lane / 16)
    g: ir.Value  # lane / 4: the C fragment's row
    q: ir.Value  # lane % 4: the C fragment's column pair


def lanes(tid: ir.Value) -> Lanes:
    lane = a.rem(tid, WARP)
    eighth = a.div(lane, 8)
    upper = a.div(lane, 16)
    return Lanes(
        tid=tid,
        lane=lane,
        warp=a.div(tid, WARP),
        a_row=a.rem(lane, 16),
        a_col=a.mul(upper, 8),
        b_row=a.add(a.rem(lane, 8), a.mul(upper, 8)),
        b_col=a.mul(a.rem(eighth, 2), 8),
        t_row=a.add(a.rem(lane, 8), a.mul(a.rem(eighth, 2), 8)),
        t_col=a.mul(upper, 8),
        g=a.div(lane, 4),
        q=a.rem(lane, 4),
    )


def row_stride(dim: int) -> int:
    return padded(dim) + 8


def workgroup() -> ir.Attribute:
    return ir.Attribute.parse("#gpu.address_space<workgroup>")


def tile_view(base: ir.Value, offset: int, rows: int, dim: int, dtype: ir.Type) -> ir.Value:
    """A [rows, padded(dim) + 8] view of the dynamic shared memory at byte ``offset``."""
    view_type = ir.MemRefType.get([rows, row_stride(dim)], dtype, memory_space=workgroup())
    return memref.view(view_type, base, a.idx(offset), [])


@dataclass(frozen=True)
class Pieces:
    """The loop-invariant part of one thread's copies: in the regular layout (every turn of
    the block covers whole rows), its first row and its column, the rest being constant
    offsets; otherwise the (row, column) of each piece."""

    row: ir.Value | None = None
    col: ir.Value | None = None
    each: tuple[tuple[ir.Value, ir.Value], ...] = ()


@dataclass(frozen=True)
class TileCopy:
    """Copies a [rows, dim] slab of a strided global tensor into a shared tile.

    The tile's ``rows · padded(dim) / vec`` pieces of ``vec`` elements are dealt round-robin
    to the block's threads. When a row's pieces divide the block (``regular``), a thread
    copies the same column of rows ``r0, r0 + step, ...``: its source addresses are one
    address plus multiples of ``step·stride``, computed by additions each tile rather than
    kept in registers across the loop. Otherwise a thread whose last turn falls past the end
    copies the final piece again (the same bytes to the same place). Either way every copy is
    unconditional, as the pipelining pass expects of its loop body."""

    rows: int
    dim: int
    vec: int
    threads: int

    @property
    def pieces_per_row(self) -> int:
        return padded(self.dim) // self.vec

    @property
    def turns(self) -> int:
        return -(-self.rows * self.pieces_per_row // self.threads)

    @property
    def regular(self) -> bool:
        step, rest = divmod(self.threads, self.pieces_per_row)
        return rest == 0 and self.rows % step == 0

    @property
    def row_step(self) -> int:
        return self.threads // self.pieces_per_row

    def thread_pieces(self, tid: ir.Value) -> Pieces:
        """This thread's share of the tile: loop-invariant, computed once."""
        ppr = self.pieces_per_row
        if self.regular:
            return Pieces(row=a.div(tid, ppr), col=a.mul(a.rem(tid, ppr), self.vec))
        total = self.rows * ppr
        each = []
        for turn in range(self.turns):
            piece = a.add(tid, turn * self.threads)
            if (turn + 1) * self.threads > total:
                piece = a.smin(piece, total - 1)
            each.append((a.div(piece, ppr), a.mul(a.rem(piece, ppr), self.vec)))
        return Pieces(each=tuple(each))

    def issue(
        self,
        pieces: Pieces,
        tile: ir.Value,
        src: ir.Value,
        base: ir.Value,
        first_row: ir.Value,
        stride: ir.Value,
        limit: ir.Value,
    ) -> list[ir.Value]:
        """cp.async of rows ``first_row + r`` (r < rows) from ``src[base + row·stride + col]``
        into ``tile``; rows at or past ``limit`` and columns past ``dim`` are zero-filled
        (their source is the tile's first row, which exists: no byte of it is read). Returns
        the copies' tokens."""
        if pieces.row is None:
            return self._issue_each(pieces, tile, src, base, first_row, stride, limit)
        row, col = pieces.row, pieces.col
        assert col is not None
        col_src, inside = self._column(col)
        fallback = a.add(a.add(base, a.mul(first_row, stride)), col_src)
        start = a.add(first_row, row)
        room = a.sub(limit, start)  # rows left from this thread's first row on
        index = a.add(a.add(base, a.mul(start, stride)), col_src)
        step = a.mul(stride, self.row_step)
        tokens = []
        for turn in range(self.rows // self.row_step):
            offset = turn * self.row_step
            if turn:
                index = a.add(index, step)
            valid = a.cmp("sgt", room, offset)
            if inside is not None:
                valid = a.both(valid, inside)
            tokens.append(
                self._copy(
                    tile, a.add(row, offset), col, src, a.select(valid, index, fallback), valid
                )
            )
        return tokens

    def _column(self, col: ir.Value) -> tuple[ir.Value, ir.Value | None]:
        """The source column (0 for padding columns, which are zero-filled) and whether the
        column is inside the row (None: always)."""
        if self.dim == padded(self.dim):
            return col, None
        inside = a.cmp("slt", col, self.dim)
        return a.select(inside, col, 0), inside

    def _issue_each(
        self,
        pieces: Pieces,
        tile: ir.Value,
        src: ir.Value,
        base: ir.Value,
        first_row: ir.Value,
        stride: ir.Value,
        limit: ir.Value,
    ) -> list[ir.Value]:
        tokens = []
        last = a.sub(limit, 1)
        for row, col in pieces.each:
            src_row = a.add(first_row, row)
            valid = a.cmp("slt", src_row, limit)
            col_src, inside = self._column(col)
            if inside is not None:
                valid = a.both(valid, inside)
            index = a.add(a.add(base, a.mul(a.smin(src_row, last), stride)), col_src)
            tokens.append(self._copy(tile, row, col, src, index, valid))
        return tokens

    def _copy(
        self,
        tile: ir.Value,
        row: ir.Value,
        col: ir.Value,
        src: ir.Value,
        index: ir.Value,
        valid: ir.Value,
    ) -> ir.Value:
        element_bytes = a.bit_width(ir.MemRefType(src.type).element_type) // 8
        return nvgpu.device_async_copy(
            tile,
            [row, col],
            src,
            [index],
            ir.IntegerAttr.get(a.index_type(), self.vec),
            src_elements=a.select(valid, a.idx(self.vec), 0),
            bypass_l1=True if self.vec * element_bytes == 16 else None,
        )


def ldmatrix(
    dtype: str, tile: ir.Value, row: ir.Value, col: ir.Value, transpose: bool
) -> list[ir.Value]:
    """ldmatrix.x4 at (row, col) of this lane: four 8x8 matrices as four packed operands."""
    loaded = nvgpu.ldmatrix(
        ir.VectorType.get([4, 2], a.half_type(dtype)), tile, [row, col], transpose, 4
    )
    return a.split_fragments(dtype, loaded, 4)


_ACC = "!llvm.struct<(f32, f32, f32, f32)>"


def mma(dtype: str, x: list[ir.Value], y: list[ir.Value], acc: list[ir.Value]) -> list[ir.Value]:
    """acc + x·y with mma.sync.m16n8k16 (f32 accumulation): x the four A operands, y the two
    B operands, acc the four f32 of the C fragment."""
    ptx = ir.Attribute.parse(f"#nvvm.mma_type<{dtype}>")
    result = nvvm.mma_sync(
        ir.Type.parse(_ACC),
        ir.Attribute.parse("#nvvm.shape<m = 16, n = 8, k = 16>"),
        ir.Attribute.parse("#nvvm.mma_layout<row>"),
        ir.Attribute.parse("#nvvm.mma_layout<col>"),
        x,
        y,
        acc,
        multiplicand_a_ptx_type=ptx,
        multiplicand_b_ptx_type=ptx,
    )
    return [llvm.extractvalue(a.f32_type(), result, [i]) for i in range(4)]
