"""tessera-expand-math: ``math.exp``/``math.tanh`` on floats as inline f32 arithmetic.

Upstream lowering turns these ops into libm calls (one per element, and a call in a loop body
stops LLVM's loop vectoriser). After the loops exist, this pass replaces each by a call to a
small private function holding the polynomial versions of ``vector_math`` (about one ulp);
LLVM inlines it and vectorises the loop. bf16/f16 values are widened to f32 and the result
rounded back, as torch computes them.
"""

from __future__ import annotations

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

from ..kernel_call import enclosing_module, ensure_function, mangle
from . import vector_math as vm
from .builder import Kernel

_FUNCTIONS = {"math.exp": vm.exp, "math.tanh": vm.tanh}
_FLOATS = ("f32", "bf16", "f16")


def _element(type_: ir.Type) -> str | None:
    """The float element type of a scalar or vector type this pass handles, else None."""
    if isinstance(type_, ir.VectorType):
        if type_.rank != 1 or type_.scalable:
            return None
        text = str(type_.element_type)
    else:
        text = str(type_)
    return text if text in _FLOATS else None


def helper_source(op_name: str, type_text: str, element: str) -> tuple[str, str]:
    """(symbol, text) of the private function computing ``op_name`` on ``type_text``."""
    symbol = mangle("tessera", op_name.replace(".", "_"), type_text)
    wide = type_text.replace(element, "f32") if element != "f32" else type_text
    k = Kernel(symbol, [("%x", type_text)], results=[type_text])
    x = "%x"
    if element != "f32":
        x = k.op("x", f"arith.extf %x : {type_text} to {wide}")
    value = _FUNCTIONS[op_name](k, x, wide)
    if element != "f32":
        value = k.op("y", f"arith.truncf {value} : {wide} to {type_text}")
    k.line(f"return {value} : {type_text}")
    return symbol, k.text()


@register_pass("tessera-expand-math")
def expand_math(module: ir.Operation, options: NoOptions) -> None:
    """Replace math.exp and math.tanh on f32/bf16/f16 scalars and vectors by calls to
    vectorisable polynomial versions."""
    for op in walk_ops(module):
        if op.name not in _FUNCTIONS:
            continue
        type_ = op.results[0].type
        element = _element(type_)
        if element is None:
            continue
        symbol, source = helper_source(op.name, str(type_), element)
        ensure_function(enclosing_module(op), symbol, source)
        with ir.InsertionPoint(op), op.location:
            call = ir.Operation.create(
                "func.call",
                results=[type_],
                operands=[op.operands[0]],
                attributes={"callee": ir.FlatSymbolRefAttr.get(symbol)},
            )
        op.results[0].replace_all_uses_with(call.results[0])
        op.erase()
