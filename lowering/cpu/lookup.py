"""``tessera.tensor.lookup`` on the CPU: y[r, :] = table[ids[r], :] · scale.

The scale is applied in f32 and the product rounded to the result dtype (a scale of 1 copies
the row unchanged). An id outside [0, V) yields a row of zeros rather than a read out of
bounds; callers that need an error check the ids before running.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import Lookup
from tessera.ir_types import Dims, shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vectors
from .builder import Kernel
from .host import Host
from .kernel_types import float_dtype, static_dim
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor


@dataclass(frozen=True)
class LookupSpec:
    ids_rank: int
    vocab: int
    width: int
    dtype: str
    ids_dtype: str
    scale: float

    def symbol(self) -> str:
        return mangle(
            "tessera_lookup",
            f"r{self.ids_rank}",
            self.vocab,
            self.width,
            self.dtype,
            self.ids_dtype,
            f"s{self.scale!r}",
        )

    @property
    def ids_view(self) -> list[int | None]:
        return [None] * self.ids_rank

    @property
    def y_view(self) -> list[int | None]:
        return [*self.ids_view, self.width]


def _flatten(k: Kernel, buffer: str, shape: list[int | None], dtype: str) -> str:
    """An identity-layout memref with all dims dynamic, merged into one."""
    if len(shape) == 1:
        return buffer
    groups = ", ".join(str(i) for i in range(len(shape)))
    return k.op(
        "m",
        f"memref.collapse_shape {buffer} [[{groups}]] : "
        f"{memref_type(shape, dtype)} into {memref_type([None], dtype)}",
    )


@cache
def core_source(spec: LookupSpec, host: Host) -> str:
    lanes = host.lanes
    vtype = f"vector<{lanes}xf32>"
    table_type = memref_type([spec.vocab, spec.width], spec.dtype)
    ids_type = memref_type(spec.ids_view, spec.ids_dtype)
    y_type = memref_type(spec.y_view, spec.dtype)
    k = Kernel(
        spec.symbol() + "_core", [("%table", table_type), ("%ids", ids_type), ("%y", y_type)]
    )
    ids = _flatten(k, "%ids", spec.ids_view, spec.ids_dtype)
    rows_type = memref_type([None, spec.width], spec.dtype)
    if spec.ids_rank == 1:
        y_rows = "%y"
    else:
        groups = ", ".join(str(i) for i in range(spec.ids_rank))
        y_rows = k.op(
            "m",
            f"memref.collapse_shape %y [[{groups}], [{spec.ids_rank}]] : {y_type} into {rows_type}",
        )
    count = k.op("n", f"memref.dim {ids}, {k.index(0)} : {memref_type([None], spec.ids_dtype)}")
    scale = k.splat(spec.scale, vtype)
    with k.loop(0, count, 1) as rows:
        row = rows.iv
        raw = k.op("id", f"memref.load {ids}[{row}] : {memref_type([None], spec.ids_dtype)}")
        index = k.op("id", f"arith.index_cast {raw} : {spec.ids_dtype} to index")
        above = k.cmp("sge", index, 0)
        below = k.cmp("slt", index, spec.vocab)
        valid = k.op("p", f"arith.andi {above}, {below} : i1")
        with k.if_(valid):
            for start, width in vectors.chunks(spec.width, lanes):
                column = k.index(start)
                source = f"{index}, {column}"
                target = f"{row}, {column}"
                if spec.scale == 1.0:
                    value = vectors.load(
                        k, "%table", table_type, source, spec.dtype, lanes, width, widen=False
                    )
                    vectors.store(
                        k, value, y_rows, rows_type, target, spec.dtype, lanes, width, rounded=True
                    )
                    continue
                value = vectors.load(k, "%table", table_type, source, spec.dtype, lanes, width)
                value = k.op("v", f"arith.mulf {value}, {scale} : {vtype}")
                vectors.store(k, value, y_rows, rows_type, target, spec.dtype, lanes, width)
        with k.otherwise():
            zero = k.splat(0.0, f"vector<{lanes}x{spec.dtype}>")
            for start, width in vectors.chunks(spec.width, lanes):
                vectors.store(
                    k,
                    zero,
                    y_rows,
                    rows_type,
                    f"{row}, {k.index(start)}",
                    spec.dtype,
                    lanes,
                    width,
                    rounded=True,
                )
    k.line("return")
    return k.text()


def wrapper_source(
    spec: LookupSpec, symbol: str, table: ir.Value, ids: ir.Value, y: ir.Value
) -> str:
    ids_shape = shaped_dims(ids.type)
    k = Kernel(
        symbol, [("%table", str(table.type)), ("%ids", str(ids.type))], results=[str(y.type)]
    )
    table_shape: Dims = [spec.vocab, spec.width]
    table_buffer = buffer_of(k, "%table", table_shape, spec.dtype, table_shape)
    ids_buffer = buffer_of(k, "%ids", ids_shape, spec.ids_dtype, spec.ids_view)
    sizes = [*dims_of(k, "%ids", ids_shape, spec.ids_dtype), k.index(spec.width)]
    y_buffer = alloc(k, spec.y_view, spec.dtype, sizes)
    types = [
        memref_type(table_shape, spec.dtype),
        memref_type(spec.ids_view, spec.ids_dtype),
        memref_type(spec.y_view, spec.dtype),
    ]
    k.call_out_of_line(f"{spec.symbol()}_core", [table_buffer, ids_buffer, y_buffer], types)
    return return_tensor(k, y_buffer, spec.y_view, spec.dtype, y.type)


@rule("tessera.tensor.lookup")
def lower_lookup(op: ir.Operation, host: Host) -> None:
    view = Lookup(op)
    table, ids, y = view.table, view.ids, view.y
    spec = LookupSpec(
        ids_rank=len(shaped_dims(ids.type)),
        vocab=static_dim(op, table, 0, "table"),
        width=static_dim(op, table, 1, "table", unrolled=True),
        dtype=float_dtype(op, table, "table"),
        ids_dtype=str(ids.type.element_type),
        scale=float(view.scale),
    )
    symbol = mangle(spec.symbol(), str(ids.type), str(y.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, table, ids, y)
    replace_with_call(op, symbol, source, [table, ids])
