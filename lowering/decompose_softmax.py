"""``linalg.softmax`` as max-reduce, subtract, exp, sum-reduce, divide (upstream lowering
passes cannot take the aggregate op as it is)."""

from __future__ import annotations

import math

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import LoweringError
from tessera.ir_types import element_type, shaped_dims
from tessera.mlir_text import float_literal, is_float, tensor_type
from tessera.mlir_writer import BodyWriter

from .kernel_call import mangle, replace_with_call


def softmax_source(symbol: str, shape: list[int | None], dtype: str, dim: int) -> str:
    """A private function ``@symbol`` computing softmax of a ``shape`` tensor along ``dim``."""
    w = BodyWriter()
    full = tensor_type(shape, dtype)
    reduced_shape = [d for i, d in enumerate(shape) if i != dim]
    reduced = tensor_type(reduced_shape, dtype)
    sizes = {
        axis: w.assign(f"tensor.dim %x, {w.constant(str(axis), 'index')} : {full}", "d")
        for axis, size in enumerate(shape)
        if size is None
    }
    reduced_sizes = [sizes[a] for a in range(len(shape)) if a != dim and a in sizes]
    lowest = w.constant(float_literal(-math.inf, dtype), dtype)
    zero = w.constant(float_literal(0.0, dtype), dtype)
    init = w.assign(f"tensor.empty({', '.join(reduced_sizes)}) : {reduced}", "e")
    maximum = _reduce(w, init, lowest, full, reduced, dtype, dim, "arith.maximumf")
    whole = w.assign(f"tensor.empty({', '.join(sizes.values())}) : {full}", "e")
    spread = _broadcast(w, maximum, whole, full, reduced, dim)
    shifted = w.assign(f"arith.subf %x, {spread} : {full}")
    exponent = w.assign(f"math.exp {shifted} : {full}")
    total = _reduce(w, init, zero, full, reduced, dtype, dim, "arith.addf", exponent)
    result = w.assign(
        f"arith.divf {exponent}, {_broadcast(w, total, whole, full, reduced, dim)} : {full}"
    )
    w.line(f"return {result} : {full}")
    return w.function(symbol, [("%x", full)], [full])


def _reduce(
    w: BodyWriter,
    init: str,
    start: str,
    full: str,
    reduced: str,
    dtype: str,
    dim: int,
    combiner: str,
    source: str = "%x",
) -> str:
    filled = w.assign(f"linalg.fill ins({start} : {dtype}) outs({init} : {reduced}) -> {reduced}")
    name = w.fresh()
    w.line(
        f"{name} = linalg.reduce ins({source} : {full}) outs({filled} : {reduced}) "
        f"dimensions = [{dim}]"
    )
    a, b = w.fresh("a"), w.fresh("a")
    w.line(f"  ({a}: {dtype}, {b}: {dtype}) {{")
    w.depth += 2
    combined = w.assign(f"{combiner} {a}, {b} : {dtype}")
    w.line(f"linalg.yield {combined} : {dtype}")
    w.depth -= 2
    w.line("  }")
    return name


def _broadcast(w: BodyWriter, value: str, init: str, full: str, reduced: str, dim: int) -> str:
    return w.assign(
        f"linalg.broadcast ins({value} : {reduced}) outs({init} : {full}) dimensions = [{dim}]"
    )


def decompose_softmax(op: ir.Operation) -> None:
    x = op.operands[0]
    shape, dtype = shaped_dims(x), element_type(x)
    if not is_float(dtype):
        raise LoweringError(
            f"'linalg.softmax' op has element type {dtype}; only f16, bf16, f32 and f64 "
            "softmax can be lowered",
            source_location(op.location),
        )
    dim = ir.IntegerAttr(op.attributes["dimension"]).value
    symbol = mangle("tessera_softmax", tensor_type(shape, dtype), f"d{dim}")
    replace_with_call(op, symbol, softmax_source(symbol, shape, dtype, dim), [x])
