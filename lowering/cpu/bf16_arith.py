"""tessera-round-bf16-arith: arithmetic on bf16 values becomes f32 arithmetic between an
``arith.extf`` of each bf16 operand and an ``arith.truncf`` of each bf16 result.

Without avx512bf16, LLVM computes a bf16 operation in f32 and rounds the result by calling
``__truncsfbf2``, a compiler-runtime helper the ExecutionEngine cannot resolve (the process
aborts). Written out per op, every result is still rounded once to bf16 (as torch rounds each
bf16 op), and ``arith-expand{include-bf16=true}`` then turns each conversion into integer ops.
Upstream's ``arith-emulate-unsupported-floats`` does not serve: it keeps a chain of ops in f32
and rounds only at its end, which gives other values than torch. Runs on loops, before
``arith-expand``.
"""

from __future__ import annotations

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

# Ops that only move or convert bf16 bits: no rounding of theirs to write out.
_UNTOUCHED = {
    "arith.extf",
    "arith.truncf",
    "arith.bitcast",
    "arith.constant",
    "arith.select",
}


def _is_bf16(type_: ir.Type) -> bool:
    element = type_.element_type if isinstance(type_, ir.ShapedType) else type_
    return isinstance(element, ir.BF16Type)


def _as_f32(type_: ir.Type) -> ir.Type:
    f32 = ir.F32Type.get()
    if isinstance(type_, ir.VectorType):
        return ir.VectorType.get(type_.shape, f32)
    return f32


def _computes_in_bf16(op: ir.Operation) -> bool:
    if op.name in _UNTOUCHED or op.name.split(".")[0] not in ("arith", "math"):
        return False
    types = [v.type for v in op.operands] + [r.type for r in op.results]
    if any(isinstance(t, ir.ShapedType) and not isinstance(t, ir.VectorType) for t in types):
        return False  # tensors and memrefs: the elementwise op on loops is what rounds
    return any(_is_bf16(t) for t in types)


@register_pass("tessera-round-bf16-arith")
def round_bf16_arith(module: ir.Operation, options: NoOptions) -> None:
    """Compute each arith/math op on bf16 scalars or vectors in f32, rounding its result."""
    ops = [op for op in walk_ops(module) if _computes_in_bf16(op)]
    for op in ops:
        with ir.InsertionPoint(op), op.location:
            operands = [
                ir.Operation.create("arith.extf", results=[_as_f32(v.type)], operands=[v]).result
                if _is_bf16(v.type)
                else v
                for v in op.operands
            ]
            attributes = {name: op.attributes[name] for name in op.attributes}
            results = [_as_f32(r.type) if _is_bf16(r.type) else r.type for r in op.results]
            wide = ir.Operation.create(
                op.name, results=results, operands=operands, attributes=attributes
            )
        with ir.InsertionPoint.after(wide), op.location:
            for old, new in zip(op.results, wide.results, strict=True):
                if _is_bf16(old.type):
                    new = ir.Operation.create(
                        "arith.truncf", results=[old.type], operands=[new]
                    ).result
                old.replace_all_uses_with(new)
        op.erase()
