"""``tessera.mlp.swi_glu`` on the CPU: y = (act(x·w_gateᵀ) ⊙ x·w_upᵀ)·w_downᵀ.

The gate and up projections run as one dot-product matmul whose microtile takes half its
columns from each weight (one pass over x, both sums side by side in registers); its epilogue
forms h = act(gate)·up and stores it in x's dtype. The down projection is a second matmul over
h. Rounding follows torch's bf16 module: gate and up are rounded to x's dtype, the activation
is computed in f32 from the rounded gate and rounded, and so is the product.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import GatedMlp
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vector_math as vm
from .builder import Kernel
from .host import Host
from .kernel_types import check, float_dtype, static_dim, static_dims
from .matmul import Operand, column_tile, default_tiling, emit_matmul
from .parallel import finish_range_core, launch, range_core
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor, rows_view


@dataclass(frozen=True)
class MlpSpec:
    rank: int
    width: int  # D
    hidden: int  # F
    dtype: str
    w_dtypes: tuple[str, ...]  # (gate, up, down) or (gate_up, down)
    activation: str

    @property
    def fused(self) -> bool:
        return len(self.w_dtypes) == 2

    def symbol(self) -> str:
        return mangle(
            "tessera_mlp",
            f"r{self.rank}",
            self.width,
            self.hidden,
            self.dtype,
            *self.w_dtypes,
            self.activation,
        )

    @property
    def view(self) -> list[int | None]:
        return [*[None] * (self.rank - 1), self.width]

    def weight_shapes(self) -> list[list[int | None]]:
        down: list[int | None] = [self.width, self.hidden]
        if self.fused:
            return [[2 * self.hidden, self.width], down]
        return [[self.hidden, self.width], [self.hidden, self.width], down]


def _names(spec: MlpSpec) -> list[str]:
    return ["%w_gate_up", "%w_down"] if spec.fused else ["%w_gate", "%w_up", "%w_down"]


@cache
def gated_source(spec: MlpSpec, host: Host) -> str:
    """``<symbol>_gated(x, gate and up weights, h, begin, end)``: h = act(x·gateᵀ) ⊙ x·upᵀ
    for hidden columns [begin, end)."""
    x_type = memref_type(spec.view, spec.dtype)
    shapes, dtypes, names = spec.weight_shapes()[:-1], spec.w_dtypes[:-1], _names(spec)[:-1]
    weight_types = [memref_type(s, d) for s, d in zip(shapes, dtypes, strict=True)]
    h_type = memref_type([None, spec.hidden], spec.dtype)
    params = [("%x", x_type), *zip(names, weight_types, strict=True), ("%h", h_type)]
    k = range_core(spec.symbol() + "_gated", params)
    rows_type = memref_type([None, spec.width], spec.dtype)
    x_rows = rows_view(k, "%x", spec.view, spec.dtype)
    m = k.op("m", f"memref.dim {x_rows}, {k.index(0)} : {rows_type}")
    gate = Operand(names[0], weight_types[0], dtypes[0])
    if spec.fused:
        up = Operand(names[0], weight_types[0], dtypes[0], row_offset=spec.hidden)
    else:
        up = Operand(names[1], weight_types[1], dtypes[1])
    dtype = spec.dtype

    def through(k: Kernel, value: str, vtype: str) -> str:
        """``value`` rounded to x's dtype and widened again, as torch stores it."""
        if dtype == "f32":
            return value
        narrow = vtype.replace("f32", dtype)
        rounded = k.op("cv", f"arith.truncf {value} : {vtype} to {narrow}")
        return k.op("cv", f"arith.extf {rounded} : {narrow} to {vtype}")

    def activated(k: Kernel, value: str, vtype: str) -> str:
        return through(k, vm.activation(k, spec.activation, through(k, value, vtype), vtype), vtype)

    def gated(k: Kernel, row: str, column: str, width: int, totals: list[str]) -> None:
        vtype = f"vector<{width}xf32>"
        product = k.op("v", f"arith.mulf {totals[0]}, {totals[1]} : {vtype}")
        if dtype != "f32":
            product = k.op("cv", f"arith.truncf {product} : {vtype} to vector<{width}x{dtype}>")
        k.line(f"vector.store {product}, %h[{row}, {column}] : {h_type}, vector<{width}x{dtype}>")

    # The activation runs on whole reduced vectors (both rows of a microtile at once).
    emit_matmul(
        k,
        Operand(x_rows, rows_type, dtype),
        m,
        [gate, up],
        spec.hidden,
        spec.width,
        gated,
        host,
        columns=("%begin", "%end"),
        transforms=[activated, through],
    )
    return finish_range_core(k, host)


@cache
def down_source(spec: MlpSpec, host: Host) -> str:
    """``<symbol>_down(h, w_down, y, begin, end)``: y = h·w_downᵀ for columns [begin, end)."""
    h_type = memref_type([None, spec.hidden], spec.dtype)
    w_type = memref_type(spec.weight_shapes()[-1], spec.w_dtypes[-1])
    y_type = memref_type(spec.view, spec.dtype)
    k = range_core(spec.symbol() + "_down", [("%h", h_type), ("%w_down", w_type), ("%y", y_type)])
    rows_type = memref_type([None, spec.width], spec.dtype)
    y_rows = rows_view(k, "%y", spec.view, spec.dtype)
    m = k.op("m", f"memref.dim %h, {k.index(0)} : {h_type}")
    dtype = spec.dtype

    def store(k: Kernel, row: str, column: str, width: int, totals: list[str]) -> None:
        value = totals[0]
        if dtype != "f32":
            value = k.op(
                "cv", f"arith.truncf {value} : vector<{width}xf32> to vector<{width}x{dtype}>"
            )
        k.line(
            f"vector.store {value}, {y_rows}[{row}, {column}] : {rows_type}, "
            f"vector<{width}x{dtype}>"
        )

    down = Operand("%w_down", w_type, spec.w_dtypes[-1])
    emit_matmul(
        k,
        Operand("%h", h_type, dtype),
        m,
        [down],
        spec.width,
        spec.hidden,
        store,
        host,
        columns=("%begin", "%end"),
    )
    return finish_range_core(k, host)


def wrapper_source(
    spec: MlpSpec, symbol: str, x: ir.Value, weights: list[ir.Value], host: Host
) -> str:
    shape = shaped_dims(x.type)
    names = _names(spec)
    params = [("%x", str(x.type)), *[(n, str(w.type)) for n, w in zip(names, weights, strict=True)]]
    k = Kernel(symbol, params, results=[str(x.type)])
    x_buffer = buffer_of(k, "%x", shape, spec.dtype, spec.view)
    weight_buffers = [
        buffer_of(k, n, s, d, s)
        for n, s, d in zip(names, spec.weight_shapes(), spec.w_dtypes, strict=True)
    ]
    weight_types = [
        memref_type(s, d) for s, d in zip(spec.weight_shapes(), spec.w_dtypes, strict=True)
    ]
    dims = dims_of(k, "%x", shape, spec.dtype)
    rows = k.index(1)
    for dim in dims[:-1]:
        rows = k.mul(rows, dim)
    h_type = memref_type([None, spec.hidden], spec.dtype)
    h = alloc(k, [None, spec.hidden], spec.dtype, [rows, k.index(spec.hidden)])
    y_buffer = alloc(k, spec.view, spec.dtype, dims)
    view_type = memref_type(spec.view, spec.dtype)
    work = k.mul(rows, spec.width * spec.hidden)
    tile = column_tile(2, default_tiling(spec.dtype, host))
    launch(
        k,
        spec.symbol() + "_gated",
        [x_buffer, *weight_buffers[:-1], h],
        [view_type, *weight_types[:-1], h_type],
        spec.hidden,
        tile,
        work,
        host,
    )
    tile = column_tile(1, default_tiling(spec.dtype, host))
    launch(
        k,
        spec.symbol() + "_down",
        [h, weight_buffers[-1], y_buffer],
        [h_type, weight_types[-1], view_type],
        spec.width,
        tile,
        work,
        host,
    )
    return return_tensor(k, y_buffer, spec.view, spec.dtype, x.type)


@rule("tessera.mlp.swi_glu")
def lower_gated_mlp(op: ir.Operation, host: Host) -> None:
    view = GatedMlp(op)
    x, weights = view.x, list(view.weights)
    shape = static_dims(op, x, [-1], "x")
    for index, weight in enumerate(weights):
        static_dims(op, weight, [0, 1], f"weight #{index}")
    check(len(weights) in (2, 3), op, f"expects 2 or 3 weights, found {len(weights)}")
    spec = MlpSpec(
        rank=len(shape),
        width=static_dim(op, x, -1, "x"),
        hidden=static_dim(op, weights[-1], 1, f"weight #{len(weights) - 1}"),
        dtype=float_dtype(op, x, "x"),
        w_dtypes=tuple(float_dtype(op, w, f"weight #{i}") for i, w in enumerate(weights)),
        activation=str(view.activation),
    )
    symbol = mangle(spec.symbol(), str(x.type))
    source = (
        gated_source(spec, host)
        + down_source(spec, host)
        + wrapper_source(spec, symbol, x, weights, host)
    )
    replace_with_call(op, symbol, source, [x, *weights])
