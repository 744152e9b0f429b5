"""The outer-product matmul microkernel: C[m, n] = init[m, n] + Σ_k A[m, k]·B[k, n] with B's rows
contiguous along N (x·w for a [K, N] weight, and p·v in attention), accumulated in f32.

A microtile holds ``mr`` rows × ``nr`` vectors of C in registers; each k broadcasts ``mr``
scalars of A and loads ``nr`` vectors of B's row k, for ``mr·nr`` fused multiply-adds. No
reduction across lanes is needed, so K may be dynamic. The last column tile is narrower and its
last vector masked; rows past the last full ``mr`` tile are done one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import vectors
from .builder import Kernel
from .host import Host
from .matmul import Operand

# (kernel, row, first column, width) -> initial accumulator vector<lanes x f32>
Init = Callable[[Kernel, str, str, int], str]
# (kernel, row, first column, width, accumulator vector<lanes x f32>)
Store = Callable[[Kernel, str, str, int, str], None]


def zero_init(host: Host) -> Init:
    def init(k: Kernel, row: str, column: str, width: int) -> str:
        return k.splat(0.0, f"vector<{host.lanes}xf32>")

    return init


def load_row_vector(
    k: Kernel, operand: Operand, row: str, column: str, width: int, host: Host
) -> str:
    """``width`` ≤ lanes elements of ``operand``'s row as vector<lanes x f32> (rest zero)."""
    return vectors.load(
        k,
        operand.name,
        operand.type,
        operand.index(k, row, column),
        operand.dtype,
        host.lanes,
        width,
    )


def column_tile(host: Host, nr: int = 4) -> int:
    """Columns of C in one microtile."""
    return nr * host.lanes


@dataclass(frozen=True)
class _Plan:
    """What every microtile of one ``emit_matmul_nn`` shares."""

    a: Operand
    m: str
    full_rows: str  # m rounded down to a multiple of mr
    b: Operand
    depth: int | str
    init: Init
    store: Store
    host: Host
    mr: int


def emit_matmul_nn(
    k: Kernel,
    a: Operand,
    m: str,
    b: Operand,
    n: int,
    depth: int | str,
    init: Init,
    store: Store,
    host: Host,
    mr: int = 4,
    nr: int = 4,
    columns: tuple[str, str] | None = None,
) -> None:
    """Emits the loops over rows [0, m) and columns [0, n) of C, or over columns
    [begin, end) when ``columns`` is given (begin a multiple of ``column_tile``, end one or n)."""
    lanes = host.lanes
    tile_cols = column_tile(host, nr)
    full = n - n % tile_cols
    rest = n % tile_cols
    plan = _Plan(a, m, k.floor_to(m, mr), b, depth, init, store, host, mr)
    begin, end = columns if columns is not None else (k.index(0), k.index(n))
    if full:
        with k.loop(begin, k.min(end, full) if columns is not None else full, tile_cols) as cols:
            _emit_rows(k, plan, cols.iv, [lanes] * nr)
    if rest:
        widths = [lanes] * (rest // lanes) + ([rest % lanes] if rest % lanes else [])
        if columns is None:
            _emit_rows(k, plan, k.index(full), widths)
            return
        with k.if_(k.cmp("eq", end, n)):
            _emit_rows(k, plan, k.index(full), widths)


def _emit_rows(k: Kernel, plan: _Plan, column: str, widths: list[int]) -> None:
    with k.loop(0, plan.full_rows, plan.mr) as rows:
        _emit_tile(k, plan, rows.iv, plan.mr, column, widths)
    if plan.mr > 1:
        with k.loop(plan.full_rows, plan.m, 1) as rows:
            _emit_tile(k, plan, rows.iv, 1, column, widths)


def _emit_tile(k: Kernel, plan: _Plan, row: str, rows: int, column: str, widths: list[int]) -> None:
    a, b, host = plan.a, plan.b, plan.host
    lanes = host.lanes
    vtype = f"vector<{lanes}xf32>"
    row_index = [k.add(row, i) for i in range(rows)]
    columns = [k.add(column, j * lanes) for j in range(len(widths))]
    accs = [plan.init(k, r, c, w) for r in row_index for c, w in zip(columns, widths, strict=True)]
    with k.loop(0, plan.depth, 1, [(acc, vtype) for acc in accs]) as steps:
        b_vectors = [
            load_row_vector(k, b, steps.iv, c, w, host)
            for c, w in zip(columns, widths, strict=True)
        ]
        out = []
        for i, r in enumerate(row_index):
            scalar = k.op("ld", f"memref.load {a.name}[{a.index(k, r, steps.iv)}] : {a.type}")
            if a.dtype != "f32":
                scalar = k.op("cv", f"arith.extf {scalar} : {a.dtype} to f32")
            broadcast = k.op("bc", f"vector.broadcast {scalar} : f32 to {vtype}")
            for j, b_vector in enumerate(b_vectors):
                acc = steps.args[i * len(widths) + j]
                out.append(k.op("acc", f"vector.fma {broadcast}, {b_vector}, {acc} : {vtype}"))
        steps.yield_(out)
    results = steps.results
    for i, r in enumerate(row_index):
        for j, (c, w) in enumerate(zip(columns, widths, strict=True)):
            plan.store(k, r, c, w, results[i * len(widths) + j])
