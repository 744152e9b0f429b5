"""Staging a k tile into LDS on AMD, where there is no cp.async: every thread loads its
vectors of the tile (the same copy units the CUDA kernels issue as cp.async, ``gemm_tiles``)
into registers, then stores them into the tile's LDS view.

All loads are issued before the first store, so they are in flight together. A unit that
falls outside the matrix reads an in-bounds address (``TileCopies.source``) and stores zeros,
as a cp.async with ``src_elements`` 0 would. The loop this leaves (loads, stores, barrier,
compute, barrier) is the canonical form ``tessera-schedule-lds-copies`` double-buffers.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlir import ir
from mlir.dialects import arith, vector

from tessera.lowering.cuda.kernels.gemm_ir import DTYPE_BYTES, element

if TYPE_CHECKING:
    from tessera.lowering.cuda.device import StagedTile
    from tessera.lowering.cuda.kernels.gemm_ir import Ix


def _zeros(vtype: ir.VectorType) -> ir.Value:
    zero = ir.FloatAttr.get(vtype.element_type, 0.0)
    return arith.constant(vtype, ir.DenseElementsAttr.get_splat(vtype, zero))  # type: ignore[call-arg]


def stage_tiles(ix: Ix, kt: ir.Value, tiles: Sequence[StagedTile]) -> None:
    """Loads k tile ``kt`` of every operand into registers, then stores it into LDS."""
    loaded: list[tuple[ir.Value, ir.Value, ir.Value, ir.Value, int]] = []
    for copies, source, view in tiles:
        dtype = copies.tile.dtype
        size = DTYPE_BYTES[dtype]
        vtype = ir.VectorType.get([copies.vec], element(dtype))
        zeros = None
        # Global buffers are 16-byte aligned and every unit starts at a multiple of its width.
        global_align = copies.vec * size
        row_bytes = copies.tile.shape[1] * size
        lds_align = pymath.gcd(global_align, row_bytes)
        for unit in copies.units:
            at, valid = copies.source(ix, kt, unit)
            value = vector.load(vtype, source, [at], alignment=global_align)
            if valid is not None:
                zeros = zeros if zeros is not None else _zeros(vtype)
                value = arith.select(valid, value, zeros)
            loaded.append((value, view, unit.dst_row, unit.dst_col, lds_align))
    for value, view, row, col, align in loaded:
        vector.store(value, view, [row, col], alignment=align)
