"""Dissolves ``tessera.region`` ops into their parent block (targets lower whole functions)."""

from __future__ import annotations

from mlir import ir


def inline_region(region_op: ir.Operation) -> None:
    block = region_op.regions[0].blocks[0]
    for argument, value in zip(block.arguments, region_op.operands, strict=True):
        argument.replace_all_uses_with(value)
    body = [op.operation for op in block.operations]
    terminator = body[-1]
    for op in body[:-1]:
        op.move_before(region_op)
    for result, value in zip(region_op.results, terminator.operands, strict=True):
        result.replace_all_uses_with(value)
    region_op.erase()
