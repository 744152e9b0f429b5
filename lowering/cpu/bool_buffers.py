"""tessera-widen-bool-buffers: buffers of ``i1`` (bool attention masks in unfused IR) become
buffers of ``i8``, with ``arith.extui`` before each store and ``arith.trunci`` after each load.

``finalize-memref-to-llvm`` in the LLVM 22 wheel asserts on stores of sub-byte elements, which
aborts the process; a byte per bool is what torch stores too. Runs on loops (after
``convert-linalg-to-loops``), where every access is a ``memref.load``/``memref.store``.
"""

from __future__ import annotations

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass


def _is_bool_buffer(type_: ir.Type) -> bool:
    return (
        isinstance(type_, ir.MemRefType)
        and isinstance(type_.element_type, ir.IntegerType)
        and type_.element_type.width == 1
    )


@register_pass("tessera-widen-bool-buffers")
def widen_bool_buffers(module: ir.Operation, options: NoOptions) -> None:
    """Store i1 buffers as i8 (the loads and stores convert)."""
    ops = walk_ops(module)
    loads = [o for o in ops if o.name == "memref.load" and _is_bool_buffer(o.operands[0].type)]
    stores = [o for o in ops if o.name == "memref.store" and _is_bool_buffer(o.operands[1].type)]
    if not loads and not stores:
        return
    context = module.context
    i1 = ir.IntegerType.get_signless(1, context=context)
    i8 = ir.IntegerType.get_signless(8, context=context)
    values = [r for o in ops for r in o.results]
    values += [a for o in ops for region in o.regions for b in region.blocks for a in b.arguments]
    with ir.Location.unknown(context=context):  # type construction wants a location
        for value in values:
            type_ = value.type
            if _is_bool_buffer(type_):
                assert isinstance(type_, ir.MemRefType)
                widened = ir.MemRefType.get(type_.shape, i8, type_.layout, type_.memory_space)
                value.set_type(widened)
    for op in loads:
        loaded = op.results[0]
        loaded.set_type(i8)
        with ir.InsertionPoint.after(op), op.location:
            bit = ir.Operation.create("arith.trunci", results=[i1], operands=[loaded])
        loaded.replace_all_uses_except(bit.results[0], bit)
    for op in stores:
        with ir.InsertionPoint(op), op.location:
            byte = ir.Operation.create("arith.extui", results=[i8], operands=[op.operands[0]])
        op.operands[0] = byte.results[0]
