"""``tessera.tensor.lookup`` on CUDA: y[r, :] = table[ids[r], :] · scale.

The numerics are the CPU path's (``lowering/cpu/lookup.py``) and Gemma's: the scale is rounded
to the table's dtype (Gemma multiplies by ``tensor(sqrt(D), dtype=bf16)``; the front end's
scale is that constant already, so the rounding changes nothing there), applied in f32 and the
product rounded once to the dtype; a scale of 1 copies the row bit for bit. An id outside
[0, V) gives a row of zeros instead of a read out of bounds (the runtime rejects such ids
before launching; the kernel stays memory-safe regardless).

Rows are spread over lanes as the norm's rows are (``rms_norm.RowLayout``): each lane copies
its 16-byte vectors of one row, all issued before the first store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from mlir import ir
from mlir.dialects import arith, gpu, memref

from ..kernel import KernelInfo, KernelModule, Param, element_type
from .rms_norm import (
    DTYPE_BYTES,
    FLOAT_DTYPES,
    all_of,
    chunk_column,
    chunk_valid,
    constant,
    index,
    kernel_name,
    load_vector,
    narrow,
    row_layout,
    row_position,
    splat,
    store_vector,
    when,
    widen,
)

_TORCH_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


@dataclass(frozen=True)
class LookupConfig:
    """Static facts of one lookup kernel: the table's dtype and shape [vocab, width], the ids'
    element type (``i64`` or ``i32``) and the scale (rounded to ``dtype`` when built)."""

    dtype: str
    vocab: int
    width: int
    ids_dtype: str = "i64"
    scale: float = 1.0


def rounded_scale(scale: float, dtype: str) -> float:
    """``scale`` as a ``dtype`` value (round to nearest even), as Gemma's normaliser is."""
    return float(torch.tensor(scale, dtype=torch.float32).to(_TORCH_DTYPES[dtype]).float())


def build_lookup(km: KernelModule, cfg: LookupConfig) -> KernelInfo:
    """Adds the lookup kernel for ``cfg`` to ``km`` (once) and says how to launch it.

    Params: ``table`` (V × D elements), ``ids`` (n, ``cfg.ids_dtype``), ``y`` (n × D), ``n``
    (i32). Block: the row layout's threads; grid ``cdiv(n, rows_per_block)`` (or ``n``)."""
    if cfg.dtype not in FLOAT_DTYPES:
        raise ValueError(f"lookup tables are bf16/f16/f32, got {cfg.dtype}")
    if cfg.ids_dtype not in ("i32", "i64"):
        raise ValueError(f"lookup ids are i32 or i64, got {cfg.ids_dtype}")
    layout = row_layout(cfg.width, DTYPE_BYTES[cfg.dtype])
    name = kernel_name("lookup", f"{cfg.dtype}_{cfg.vocab}x{cfg.width}_{cfg.ids_dtype}", cfg)
    params = (
        Param.buffer("table", cfg.dtype),
        Param.buffer("ids", cfg.ids_dtype),
        Param.buffer("y", cfg.dtype),
        Param.scalar("n", "i32"),
    )
    rows_per_block = layout.rows_per_block
    grid = "n" if rows_per_block == 1 else f"cdiv(n, {rows_per_block})"
    info = KernelInfo(name, params, (grid, "1", "1"), (layout.block, 1, 1))
    if km.has_kernel(name):
        return info
    _, entry = km.add_kernel(name, params)
    with ir.InsertionPoint(entry):
        table, ids, y, n = entry.arguments
        where = row_position(layout, n)
        id_type = element_type(cfg.ids_dtype)
        token = when(
            where.row_valid,
            lambda: memref.load(ids, [where.row]),
            constant(id_type, -1),
        )
        assert token is not None
        in_range = arith.andi(
            arith.cmpi(arith.CmpIPredicate.sge, token, constant(id_type, 0)),
            arith.cmpi(arith.CmpIPredicate.slt, token, constant(id_type, cfg.vocab)),
        )
        source_row = arith.muli(arith.index_cast(ir.IndexType.get(), token), index(cfg.width))
        target_row = arith.muli(where.row, index(cfg.width))
        scale = rounded_scale(cfg.scale, cfg.dtype)
        lanes = layout.lanes
        zero = splat(0.0, lanes, cfg.dtype)
        values: list[tuple[ir.Value, ir.Value, ir.Value | None]] = []
        for k in range(layout.chunks):
            column = chunk_column(layout, where.lane, k)
            exists = chunk_valid(layout, where.lane, k)

            def read(column: ir.Value = column) -> ir.Value:
                offset = arith.addi(source_row, column)
                return load_vector(table, offset, lanes, cfg.dtype)

            value = when(all_of(in_range, exists), read, zero)
            assert value is not None
            values.append((value, column, all_of(where.row_valid, exists)))
        for value, column, valid in values:

            def write(value: ir.Value = value, column: ir.Value = column) -> None:
                if scale != 1.0:
                    factor = splat(scale, lanes)
                    value = narrow(arith.mulf(widen(value, cfg.dtype), factor), cfg.dtype)
                store_vector(value, y, arith.addi(target_row, column), cfg.dtype)

            when(valid, write)
        gpu.ReturnOp([])
    return info
