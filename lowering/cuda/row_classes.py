"""The decode step's GEMVs by batch: one kernel for a single row and one for several.

A GEMV's rows per block are fixed when it is built (``select_gemm``'s ``m_hint``), and a block
of 8 rows run on a batch of one does 8 rows' arithmetic and holds 8 rows' accumulators, which
leaves fewer columns per warp and fewer loads in flight: on an H100 the LM head's 8-row GEMV
read at about 1.6 TB/s at M = 1 where its 1-row build read at about 2.8. So a decode plan
launches both builds, each guarded: its grid is multiplied by an expression over the kernel's
``M`` that is 1 for the sizes it serves and 0 for the others, and the runtime launches no step
whose grid is empty (``CudaProgram._grids``). One set of launches then serves every batch
size, in a CUDA graph too (a graph is captured per input shape).
"""

from __future__ import annotations

import dataclasses

from .kernel import KernelInfo

# For an integer M ≥ 1: 1 when M == 1, else 0; and its complement. (M = 0 empties both grids
# through their cdiv(M, rows) factor.)
SINGLE_ROW = "1 - min(M - 1, 1)"
SEVERAL_ROWS = "min(M - 1, 1)"


def row_classes(rows_hint: int | None) -> list[tuple[int | None, str | None]]:
    """(rows to build for, the guard of its launch) for each build a plan with ``rows_hint``
    needs: one unguarded build without a hint or for a single row, else a 1-row build for
    M = 1 and a ``rows_hint`` build for M > 1."""
    if rows_hint is None or rows_hint <= 1:
        return [(rows_hint, None)]
    return [(1, SINGLE_ROW), (rows_hint, SEVERAL_ROWS)]


def guarded(info: KernelInfo, guard: str | None) -> KernelInfo:
    """``info`` with its grid emptied outside the sizes ``guard`` (over its ``M``) serves."""
    if guard is None:
        return info
    if "M" not in {p.name for p in info.params}:
        raise ValueError(f"kernel {info.name} has no M parameter to guard its launch on")
    x, y, z = info.grid
    return dataclasses.replace(info, grid=(x, f"({y}) * ({guard})", z))
