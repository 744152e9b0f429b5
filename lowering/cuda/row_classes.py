"""The decode step's GEMVs (and its paged attention) by batch: one kernel for a single row and
one for several.

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


def row_classes(rows_hint: int | None, size: str = "M") -> list[tuple[int | None, str | None]]:
    """(rows to build for, the guard of its launch) for each build a plan with ``rows_hint``
    needs: one unguarded build without a hint or for a single row, else a 1-row build for
    ``size`` = 1 and a ``rows_hint`` build for ``size`` > 1. A guard is an expression over the
    kernel's scalar ``size`` (≥ 1): 1 for the sizes its build serves, else 0 (a size of 0
    empties the GEMVs' grids anyway, through their cdiv(M, rows) factor)."""
    if rows_hint is None or rows_hint <= 1:
        return [(rows_hint, None)]
    return [(1, f"1 - min({size} - 1, 1)"), (rows_hint, f"min({size} - 1, 1)")]


def guarded(info: KernelInfo, guard: str | None, size: str = "M") -> KernelInfo:
    """``info`` with its grid emptied outside the sizes ``guard`` (over its ``size``)
    serves."""
    if guard is None:
        return info
    if size not in {p.name for p in info.params}:
        raise ValueError(f"kernel {info.name} has no {size} parameter to guard its launch on")
    x, y, z = info.grid
    return dataclasses.replace(info, grid=(x, f"({y}) * ({guard})", z))
