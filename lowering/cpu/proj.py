"""``tessera.mma.proj`` on the CPU: y = x·w (or x·wᵀ) + bias, optional softcap, f32 accumulation.

x [..., K] is viewed as [M, K] (M dynamic). With ``transpose_w`` (torch Linear's [N, K]
weight) the dot-product microkernel reads both operands along K; a [K, N] weight goes to the
outer-product microkernel. The epilogue adds the bias, applies the softcap and rounds to the
result type once, in that order, all in f32.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import Projection
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vector_math as vm
from .builder import Kernel
from .host import Host
from .kernel_types import float_dtype, static_dim, static_dims
from .lane_reduce import Transform, slice_lanes
from .matmul import Operand, column_tile, default_tiling, emit_matmul
from .matmul_nn import column_tile as nn_column_tile
from .matmul_nn import emit_matmul_nn, zero_init
from .parallel import finish_range_core, launch, range_core
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor, rows_view


@dataclass(frozen=True)
class ProjSpec:
    rank: int  # x's rank; the core sees every dim but the last as dynamic
    depth: int  # K
    width: int  # N
    x_dtype: str
    w_dtype: str
    y_dtype: str
    bias_dtype: str | None
    transpose_w: bool
    softcap: float | None

    def symbol(self) -> str:
        layout = "nt" if self.transpose_w else "nn"
        cap = f"cap{self.softcap}" if self.softcap is not None else ""
        bias = f"b{self.bias_dtype}" if self.bias_dtype else ""
        return mangle(
            "tessera_proj",
            f"r{self.rank}",
            layout,
            self.depth,
            self.width,
            self.x_dtype,
            self.w_dtype,
            self.y_dtype,
            bias,
            cap,
        )

    @property
    def x_view(self) -> list[int | None]:
        return [*[None] * (self.rank - 1), self.depth]

    @property
    def y_view(self) -> list[int | None]:
        return [*[None] * (self.rank - 1), self.width]

    @property
    def w_shape(self) -> list[int | None]:
        return [self.width, self.depth] if self.transpose_w else [self.depth, self.width]


def store_result(
    k: Kernel,
    value: str,
    row: str,
    column: str,
    width: int,
    y: str,
    y_type: str,
    y_dtype: str,
    bias: tuple[str, str, str] | None,
    softcap: float | None,
) -> None:
    """Finishes ``width`` f32 results of one row and stores them in ``y`` [rows, N]."""
    vtype = f"vector<{width}xf32>"
    if bias is not None:
        name, type_, dtype = bias
        loaded = k.op("ld", f"vector.load {name}[{column}] : {type_}, vector<{width}x{dtype}>")
        if dtype != "f32":
            loaded = k.op("cv", f"arith.extf {loaded} : vector<{width}x{dtype}> to {vtype}")
        value = k.op("v", f"arith.addf {value}, {loaded} : {vtype}")
    if softcap is not None:
        value = vm.softcap(k, value, softcap, vtype)
    if y_dtype != "f32":
        value = k.op("cv", f"arith.truncf {value} : {vtype} to vector<{width}x{y_dtype}>")
    k.line(f"vector.store {value}, {y}[{row}, {column}] : {y_type}, vector<{width}x{y_dtype}>")


@cache
def core_source(spec: ProjSpec, host: Host) -> str:
    """The memref kernel ``<symbol>_core(x [..., K], w, [bias,] y [..., N])``."""
    x_type = memref_type(spec.x_view, spec.x_dtype)
    w_type = memref_type(spec.w_shape, spec.w_dtype)
    y_full_type = memref_type(spec.y_view, spec.y_dtype)
    params = [("%x", x_type), ("%w", w_type)]
    bias = None
    if spec.bias_dtype is not None:
        bias_type = memref_type([spec.width], spec.bias_dtype)
        params.append(("%bias", bias_type))
        bias = ("%bias", bias_type, spec.bias_dtype)
    params.append(("%y", y_full_type))
    k = range_core(spec.symbol() + "_core", params)
    x_rows = rows_view(k, "%x", spec.x_view, spec.x_dtype)
    y_rows = rows_view(k, "%y", spec.y_view, spec.y_dtype)
    x_type = memref_type([None, spec.depth], spec.x_dtype)
    y_type = memref_type([None, spec.width], spec.y_dtype)
    m = k.op("m", f"memref.dim {x_rows}, {k.index(0)} : {x_type}")
    a = Operand(x_rows, x_type, spec.x_dtype)
    w = Operand("%w", w_type, spec.w_dtype)

    if spec.transpose_w:
        # Without a bias the softcap is elementwise on the sums: it runs on whole reduced
        # vectors (both rows of a microtile at once) instead of once per row.
        cap = spec.softcap if bias is None else None
        whole = cap is not None
        transforms: list[Transform] = []
        if cap is not None:

            def capped(k: Kernel, value: str, vtype: str) -> str:
                return vm.softcap(k, value, float(cap), vtype)

            transforms.append(capped)

        def epilogue(k: Kernel, row: str, column: str, width: int, totals: list[str]) -> None:
            store_result(
                k,
                totals[0],
                row,
                column,
                width,
                y_rows,
                y_type,
                spec.y_dtype,
                bias,
                None if whole else spec.softcap,
            )

        emit_matmul(
            k,
            a,
            m,
            [w],
            spec.width,
            spec.depth,
            epilogue,
            host,
            columns=("%begin", "%end"),
            transforms=transforms,
        )
    else:

        def store(k: Kernel, row: str, column: str, width: int, acc: str) -> None:
            value = slice_lanes(k, acc, host.lanes, 0, width)
            store_result(
                k, value, row, column, width, y_rows, y_type, spec.y_dtype, bias, spec.softcap
            )

        emit_matmul_nn(
            k,
            a,
            m,
            w,
            spec.width,
            spec.depth,
            zero_init(host),
            store,
            host,
            columns=("%begin", "%end"),
        )
    return finish_range_core(k, host)


def projection_wrapper(
    spec: ProjSpec,
    symbol: str,
    x: ir.Value,
    w: ir.Value,
    bias: ir.Value | None,
    result: ir.Value,
    host: Host,
) -> tuple[Kernel, str, list[str]]:
    """The start of a tensor-level function over (x, w[, bias]) returning ``result``'s type:
    the projection's core launched into a fresh y buffer. Returns the function, y and x's dims
    as index values (the caller finishes the body)."""
    x_shape = shaped_dims(x.type)
    params = [("%x", str(x.type)), ("%w", str(w.type))]
    if bias is not None:
        params.append(("%bias", str(bias.type)))
    k = Kernel(symbol, params, results=[str(result.type)])
    operands = [
        buffer_of(k, "%x", x_shape, spec.x_dtype, spec.x_view),
        buffer_of(k, "%w", spec.w_shape, spec.w_dtype, spec.w_shape),
    ]
    types = [memref_type(spec.x_view, spec.x_dtype), memref_type(spec.w_shape, spec.w_dtype)]
    if bias is not None:
        operands.append(buffer_of(k, "%bias", [spec.width], str(spec.bias_dtype), [spec.width]))
        types.append(memref_type([spec.width], str(spec.bias_dtype)))
    x_dims = dims_of(k, "%x", x_shape, spec.x_dtype)
    y_buffer = alloc(k, spec.y_view, spec.y_dtype, [*x_dims[:-1], k.index(spec.width)])
    operands.append(y_buffer)
    types.append(memref_type(spec.y_view, spec.y_dtype))
    work = k.index(spec.width)
    for dim in x_dims:
        work = k.mul(work, dim)
    if spec.transpose_w:
        align = column_tile(1, default_tiling(spec.x_dtype, host))
    else:
        align = nn_column_tile(host)
    launch(k, spec.symbol() + "_core", operands, types, spec.width, align, work, host)
    return k, y_buffer, x_dims


def wrapper_source(
    spec: ProjSpec,
    symbol: str,
    x: ir.Value,
    w: ir.Value,
    bias: ir.Value | None,
    y: ir.Value,
    host: Host,
) -> str:
    """The tensor-level function the op becomes a call to."""
    k, y_buffer, _ = projection_wrapper(spec, symbol, x, w, bias, y, host)
    return return_tensor(k, y_buffer, spec.y_view, spec.y_dtype, y.type)


@rule("tessera.mma.proj")
def lower_projection(op: ir.Operation, host: Host) -> None:
    view = Projection(op)
    x, w, bias, y = view.x, view.w, view.bias, view.y
    rows, columns = static_dim(op, w, 0, "weight"), static_dim(op, w, 1, "weight")
    static_dims(op, x, [len(shaped_dims(x.type)) - 1], "x")
    depth, width = (columns, rows) if view.transpose_w else (rows, columns)
    spec = ProjSpec(
        rank=len(shaped_dims(x.type)),
        depth=depth,
        width=width,
        x_dtype=float_dtype(op, x, "x"),
        w_dtype=float_dtype(op, w, "w"),
        y_dtype=float_dtype(op, y, "the result"),
        bias_dtype=float_dtype(op, bias, "bias") if bias is not None else None,
        transpose_w=bool(view.transpose_w),
        softcap=view.softcap,
    )
    symbol = mangle(spec.symbol(), str(x.type), str(y.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, x, w, bias, y, host)
    operands = [x, w] + ([bias] if bias is not None else [])
    replace_with_call(op, symbol, source, operands)
