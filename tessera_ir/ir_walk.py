"""Walking IR from Python.

The bindings wrap an exception raised inside a ``walk`` callback into a RuntimeError holding
the traceback text, so Tessera never does real work inside the callback: it collects the ops
first (post-order: nested ops before their parents), then acts on the list.
"""

from __future__ import annotations

from mlir import ir


def walk_ops(root: ir.Operation, pre_order: bool = False) -> list[ir.Operation]:
    """Every op nested in ``root`` (``root`` included), in post-order unless ``pre_order``."""
    found: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        found.append(op.operation)
        return ir.WalkResult.ADVANCE

    order = ir.WalkOrder.PRE_ORDER if pre_order else ir.WalkOrder.POST_ORDER
    root.operation.walk(visit, order)
    return found
