"""``tessera.norm.rms`` on the CPU: y = x · rsqrt(mean(x²) + eps) · (offset + w), in f32.

One pass sums the squares of a row with four independent vector accumulators (the row is
then in L1), a second scales it. rsqrt is 1/sqrt, as torch computes it (no reciprocal
estimate); the mean divides the sum by D, as torch's mean does on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import RmsNorm
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vectors
from .builder import Kernel
from .host import Host
from .kernel_types import float_dtype, static_dim, static_dims
from .lane_reduce import reduce_all
from .matmul import Operand
from .matmul_nn import load_row_vector
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor, rows_view

_ACCUMULATORS = 4


@dataclass(frozen=True)
class RmsSpec:
    rank: int
    width: int
    dtype: str
    w_dtype: str
    eps: float
    offset: float

    def symbol(self) -> str:
        return mangle(
            "tessera_rms",
            f"r{self.rank}",
            self.width,
            self.dtype,
            self.w_dtype,
            f"e{self.eps!r}",
            f"o{self.offset!r}",
        )

    @property
    def view(self) -> list[int | None]:
        return [*[None] * (self.rank - 1), self.width]


@cache
def core_source(spec: RmsSpec, host: Host) -> str:
    lanes = host.lanes
    vtype = f"vector<{lanes}xf32>"
    x_type = memref_type(spec.view, spec.dtype)
    w_type = memref_type([spec.width], spec.w_dtype)
    k = Kernel(spec.symbol() + "_core", [("%x", x_type), ("%w", w_type), ("%y", x_type)])
    rows_type = memref_type([None, spec.width], spec.dtype)
    x_rows = rows_view(k, "%x", spec.view, spec.dtype)
    y_rows = rows_view(k, "%y", spec.view, spec.dtype)
    x = Operand(x_rows, rows_type, spec.dtype)
    m = k.op("m", f"memref.dim {x_rows}, {k.index(0)} : {rows_type}")
    zero = k.splat(0.0, vtype)
    chunks = vectors.chunks(spec.width, lanes)
    block = _ACCUMULATORS * lanes
    blocked = spec.width - spec.width % block if spec.width >= block else 0
    with k.loop(0, m, 1) as rows:
        row = rows.iv
        accs = [zero] * _ACCUMULATORS
        if blocked:
            with k.loop(0, blocked, block, [(zero, vtype)] * _ACCUMULATORS) as steps:
                out = []
                for i, acc in enumerate(steps.args):
                    column = k.add(steps.iv, i * lanes)
                    value = load_row_vector(k, x, row, column, lanes, host)
                    out.append(k.op("v", f"vector.fma {value}, {value}, {acc} : {vtype}"))
                steps.yield_(out)
            accs = list(steps.results)
        for index, (start, width) in enumerate(c for c in chunks if c[0] >= blocked):
            value = load_row_vector(k, x, row, k.index(start), width, host)
            slot = index % _ACCUMULATORS
            accs[slot] = k.op("v", f"vector.fma {value}, {value}, {accs[slot]} : {vtype}")
        squares = reduce_all(k, accs, "add", vtype)
        mean = k.op("s", f"arith.divf {squares}, {k.f32(float(spec.width))} : f32")
        shifted = k.op("s", f"arith.addf {mean}, {k.f32(spec.eps)} : f32")
        root = k.op("s", f"math.sqrt {shifted} : f32")
        inverse = k.op("s", f"arith.divf {k.f32(1.0)}, {root} : f32")
        scale = k.op("s", f"vector.broadcast {inverse} : f32 to {vtype}")
        offset = k.splat(spec.offset, vtype)
        for start, width in chunks:
            column = k.index(start)
            value = load_row_vector(k, x, row, column, width, host)
            weight = vectors.load(k, "%w", w_type, column, spec.w_dtype, lanes, width)
            normed = k.op("v", f"arith.mulf {value}, {scale} : {vtype}")
            factor = k.op("v", f"arith.addf {offset}, {weight} : {vtype}")
            result = k.op("v", f"arith.mulf {normed}, {factor} : {vtype}")
            vectors.store(
                k, result, y_rows, rows_type, f"{row}, {column}", spec.dtype, lanes, width
            )
    k.line("return")
    return k.text()


def wrapper_source(spec: RmsSpec, symbol: str, x: ir.Value, w: ir.Value) -> str:
    shape = shaped_dims(x.type)
    k = Kernel(symbol, [("%x", str(x.type)), ("%w", str(w.type))], results=[str(x.type)])
    x_buffer = buffer_of(k, "%x", shape, spec.dtype, spec.view)
    w_buffer = buffer_of(k, "%w", [spec.width], spec.w_dtype, [spec.width])
    y_buffer = alloc(k, spec.view, spec.dtype, dims_of(k, "%x", shape, spec.dtype))
    view_type = memref_type(spec.view, spec.dtype)
    k.call_out_of_line(
        f"{spec.symbol()}_core",
        [x_buffer, w_buffer, y_buffer],
        [view_type, memref_type([spec.width], spec.w_dtype), view_type],
    )
    return return_tensor(k, y_buffer, spec.view, spec.dtype, x.type)


@rule("tessera.norm.rms")
def lower_rms_norm(op: ir.Operation, host: Host) -> None:
    view = RmsNorm(op)
    x, w = view.x, view.w
    shape = static_dims(op, x, [-1], "x")
    spec = RmsSpec(
        rank=len(shape),
        width=static_dim(op, x, -1, "x", unrolled=True),
        dtype=float_dtype(op, x, "x"),
        w_dtype=float_dtype(op, w, "the weight"),
        eps=float(view.eps),
        offset=float(view.offset),
    )
    symbol = mangle(spec.symbol(), str(x.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, x, w)
    replace_with_call(op, symbol, source, [x, w])
