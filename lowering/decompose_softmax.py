"""``linalg.softmax`` as max-reduce, subtract, exp, sum-reduce, divide (upstream lowering
passes cannot take the aggregate op as it is)."""

from __future__ import annotations

from mlir import ir

from .kernel_call import mangle, replace_with_call
from .text import NEG_INF, dynamic_sizes, empty, shape_of, tensor_type


def softmax_source(symbol: str, shape: list[int | None], dtype: str, dim: int) -> str:
    full = tensor_type(shape, dtype)
    reduced_shape = [d for i, d in enumerate(shape) if i != dim]
    reduced_axes = [i for i in range(len(shape)) if i != dim]
    reduced = tensor_type(reduced_shape, dtype)
    size_lines, sizes = dynamic_sizes("%x", shape, dtype, "x")
    body = "\n    ".join(size_lines)
    return f"""
func.func private @{symbol}(%x: {full}) -> {full} {{
    {body}
    %ninf = arith.constant {NEG_INF[dtype]} : {dtype}
    %zero = arith.constant 0.0 : {dtype}
    %r0 = {empty(reduced_shape, dtype, sizes, reduced_axes)}
    %m0 = linalg.fill ins(%ninf : {dtype}) outs(%r0 : {reduced}) -> {reduced}
    %m = linalg.reduce ins(%x : {full}) outs(%m0 : {reduced}) dimensions = [{dim}]
      (%a: {dtype}, %b: {dtype}) {{
        %mx = arith.maximumf %a, %b : {dtype}
        linalg.yield %mx : {dtype}
      }}
    %f0 = {empty(shape, dtype, sizes)}
    %mb = linalg.broadcast ins(%m : {reduced}) outs(%f0 : {full}) dimensions = [{dim}]
    %s = arith.subf %x, %mb : {full}
    %e = math.exp %s : {full}
    %z0 = linalg.fill ins(%zero : {dtype}) outs(%r0 : {reduced}) -> {reduced}
    %sum = linalg.reduce ins(%e : {full}) outs(%z0 : {reduced}) dimensions = [{dim}]
      (%a: {dtype}, %b: {dtype}) {{
        %ad = arith.addf %a, %b : {dtype}
        linalg.yield %ad : {dtype}
      }}
    %sb = linalg.broadcast ins(%sum : {reduced}) outs(%f0 : {full}) dimensions = [{dim}]
    %y = arith.divf %e, %sb : {full}
    return %y : {full}
}}
"""


def decompose_softmax(op: ir.Operation) -> None:
    x = op.operands[0]
    shape, dtype = shape_of(x.type), str(ir.ShapedType(x.type).element_type)
    dim = ir.IntegerAttr(op.attributes["dimension"]).value
    symbol = mangle("tessera_softmax", tensor_type(shape, dtype), f"d{dim}")
    replace_with_call(op, symbol, softmax_source(symbol, shape, dtype, dim), [x])
