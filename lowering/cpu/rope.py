"""``tessera.rope.apply`` on the CPU, computed the way Hugging Face's rotary embedding does.

The frequencies are torch's own: inv_freq = 1 / theta^(arange(0, d, 2) / d) in f32, divided by
the linear scaling factor (transformers divides inv_freq, not the positions), computed here at
compile time with torch and stored as a constant table. At run time each position gives the
angle pos·inv_freq[i] (one f32 multiply, as torch's [d/2, 1] × [1, S] product), its cos and sin
(libm, once per position and shared by all heads) rounded to x's dtype, and then
x1·cos − x2·sin and x2·cos + x1·sin with every product and sum rounded to x's dtype, as torch's
``q * cos + rotate_half(q) * sin`` does for bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import RopeApply
from tessera.ir_types import shaped_dims
from tessera.mlir_text import float_literal, memref_type

from ..kernel_call import mangle, replace_with_call
from . import vectors
from .builder import Kernel
from .host import Host
from .kernel_types import check, float_dtype, static_dim, static_dims
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor


@dataclass(frozen=True)
class RopeSpec:
    heads: int
    head_dim: int
    rotary_dim: int
    dtype: str
    pos_dtype: str
    theta: float
    scaling: float

    def symbol(self) -> str:
        return mangle(
            "tessera_rope",
            self.heads,
            self.head_dim,
            self.rotary_dim,
            self.dtype,
            self.pos_dtype,
            f"t{self.theta!r}",
            f"s{self.scaling!r}",
        )

    @property
    def view(self) -> list[int | None]:
        return [None, None, self.heads, self.head_dim]


def inverse_frequencies(theta: float, rotary_dim: int, scaling: float) -> list[float]:
    """transformers' ``inv_freq`` (default rope, then linear scaling), in f32: computed with
    torch itself for bit-identical tables (imported here, so that loading the passes stays
    free of torch)."""
    import torch

    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float32) / rotary_dim
    inv_freq = 1.0 / (torch.tensor(theta, dtype=torch.float32) ** exponents)
    if scaling != 1.0:
        inv_freq = inv_freq / torch.tensor(scaling, dtype=torch.float32)
    return [float(v) for v in inv_freq.to(torch.float32)]


@cache
def core_source(spec: RopeSpec, host: Host) -> str:
    lanes = host.lanes
    half = spec.rotary_dim // 2
    vtype = f"vector<{lanes}xf32>"
    x_type = memref_type(spec.view, spec.dtype)
    p_type = memref_type([None, None], spec.pos_dtype)
    table = f"{spec.symbol()}_inv_freq"
    table_type = memref_type([half], "f32")
    values = ", ".join(
        float_literal(v, "f32")
        for v in inverse_frequencies(spec.theta, spec.rotary_dim, spec.scaling)
    )
    header = f'memref.global "private" constant @{table} : {table_type} = dense<[{values}]>\n'
    k = Kernel(spec.symbol() + "_core", [("%x", x_type), ("%pos", p_type), ("%y", x_type)])
    inv_freq = k.op("m", f"memref.get_global @{table} : {table_type}")
    trig_type = memref_type([2, half], "f32")
    trig = k.op("m", f"memref.alloca() : {trig_type}")
    batch = k.op("d", f"memref.dim %x, {k.index(0)} : {x_type}")
    length = k.op("d", f"memref.dim %x, {k.index(1)} : {x_type}")
    with k.loop(0, batch, 1) as b_loop, k.loop(0, length, 1) as s_loop:
        b, s = b_loop.iv, s_loop.iv
        position = k.op("p", f"memref.load %pos[{b}, {s}] : {p_type}")
        position = k.op("p", f"arith.sitofp {position} : {spec.pos_dtype} to f32")
        with k.loop(0, half, 1) as i_loop:
            i = i_loop.iv
            frequency = k.op("f", f"memref.load {inv_freq}[{i}] : {table_type}")
            angle = k.op("f", f"arith.mulf {position}, {frequency} : f32")
            for row, function in ((0, "cos"), (1, "sin")):
                value = k.op("f", f"math.{function} {angle} : f32")
                if spec.dtype != "f32":
                    rounded = k.op("f", f"arith.truncf {value} : f32 to {spec.dtype}")
                    value = k.op("f", f"arith.extf {rounded} : {spec.dtype} to f32")
                k.line(f"memref.store {value}, {trig}[{k.index(row)}, {i}] : {trig_type}")
        with k.loop(0, spec.heads, 1) as h_loop:
            h = h_loop.iv
            for start, width in vectors.chunks(half, lanes):
                first, second = k.index(start), k.index(start + half)
                cos = vectors.load(
                    k, trig, trig_type, f"{k.index(0)}, {first}", "f32", lanes, width
                )
                sin = vectors.load(
                    k, trig, trig_type, f"{k.index(1)}, {first}", "f32", lanes, width
                )
                x1 = vectors.load(
                    k, "%x", x_type, f"{b}, {s}, {h}, {first}", spec.dtype, lanes, width
                )
                x2 = vectors.load(
                    k, "%x", x_type, f"{b}, {s}, {h}, {second}", spec.dtype, lanes, width
                )

                def product(a: str, c: str) -> str:
                    value = k.op("v", f"arith.mulf {a}, {c} : {vtype}")
                    return vectors.through(k, value, lanes, spec.dtype)

                out1 = k.op("v", f"arith.subf {product(x1, cos)}, {product(x2, sin)} : {vtype}")
                out2 = k.op("v", f"arith.addf {product(x2, cos)}, {product(x1, sin)} : {vtype}")
                vectors.store(
                    k, out1, "%y", x_type, f"{b}, {s}, {h}, {first}", spec.dtype, lanes, width
                )
                vectors.store(
                    k, out2, "%y", x_type, f"{b}, {s}, {h}, {second}", spec.dtype, lanes, width
                )
            for start, width in vectors.chunks(spec.head_dim - spec.rotary_dim, lanes):
                column = k.index(spec.rotary_dim + start)
                where = f"{b}, {s}, {h}, {column}"
                value = vectors.load(k, "%x", x_type, where, spec.dtype, lanes, width, widen=False)
                vectors.store(k, value, "%y", x_type, where, spec.dtype, lanes, width, rounded=True)
    k.line("return")
    return header + k.text()


def wrapper_source(spec: RopeSpec, symbol: str, x: ir.Value, positions: ir.Value) -> str:
    shape, p_shape = shaped_dims(x.type), shaped_dims(positions.type)
    k = Kernel(symbol, [("%x", str(x.type)), ("%pos", str(positions.type))], results=[str(x.type)])
    x_buffer = buffer_of(k, "%x", shape, spec.dtype, spec.view)
    p_buffer = buffer_of(k, "%pos", p_shape, spec.pos_dtype, [None, None])
    y_buffer = alloc(k, spec.view, spec.dtype, dims_of(k, "%x", shape, spec.dtype))
    x_type = memref_type(spec.view, spec.dtype)
    p_type = memref_type([None, None], spec.pos_dtype)
    k.call_out_of_line(
        f"{spec.symbol()}_core", [x_buffer, p_buffer, y_buffer], [x_type, p_type, x_type]
    )
    return return_tensor(k, y_buffer, spec.view, spec.dtype, x.type)


@rule("tessera.rope.apply")
def lower_rope(op: ir.Operation, host: Host) -> None:
    view = RopeApply(op)
    x, positions = view.x, view.positions
    static_dims(op, x, [2, 3], "x")
    head_dim = static_dim(op, x, 3, "x", unrolled=True)
    rotary = int(view.rotary_dim) if view.rotary_dim is not None else head_dim
    check(view.layout == "half_split", op, f"layout '{view.layout}' has no cpu kernel")
    spec = RopeSpec(
        heads=static_dim(op, x, 2, "x"),
        head_dim=head_dim,
        rotary_dim=rotary,
        dtype=float_dtype(op, x, "x"),
        pos_dtype=str(positions.type.element_type),
        theta=float(view.theta),
        scaling=float(view.scaling),
    )
    symbol = mangle(spec.symbol(), str(x.type), str(positions.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, x, positions)
    replace_with_call(op, symbol, source, [x, positions])
