"""tessera-lower-strided-copies: ``memref.copy`` between buffers that are not both contiguous
becomes ``linalg.copy`` (then loops).

Upstream lowers such a copy to a call to ``memrefCopy`` from MLIR's C runner-utils library,
which the MLIR wheel does not ship (and a compiled model should not need). Bufferization emits
them for slices and concatenations; contiguous copies stay ``memref.copy`` (a memcpy).
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import linalg

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass


def _contiguous(type_: ir.Type) -> bool:
    if not isinstance(type_, ir.MemRefType):
        return False
    layout = type_.layout
    identity = ir.AffineMap.get_identity(type_.rank, context=type_.context)
    return isinstance(layout, ir.AffineMapAttr) and layout.value == identity


@register_pass("tessera-lower-strided-copies")
def lower_strided_copies(module: ir.Operation, options: NoOptions) -> None:
    """Rewrite memref.copy between non-contiguous buffers as linalg.copy."""
    for op in walk_ops(module):
        if op.name != "memref.copy":
            continue
        source, target = op.operands[0], op.operands[1]
        if _contiguous(source.type) and _contiguous(target.type):
            continue
        with ir.InsertionPoint(op), op.location:
            # mypy reads the generated linalg.copy; linalg/__init__.py replaces it (outs=...).
            linalg.copy(source, outs=[target])  # type: ignore[call-arg]
        op.erase()
