"""tessera-dce and tessera-cse: dead-code elimination and CSE for pure tessera ops.

MLIR treats unregistered ops as having side effects, so upstream canonicalize and cse leave
tessera ops alone; these two passes give pure tessera ops the same treatment (the pipeline
runs them right after canonicalize and cse).
"""

from __future__ import annotations

from mlir import ir

from tessera.dialects import is_pure
from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass


def _unused(op: ir.Operation) -> bool:
    return all(not list(result.uses) for result in op.results)


@register_pass("tessera-dce")
def eliminate_dead_tessera_ops(module: ir.Operation, options: NoOptions) -> None:
    """Erase pure tessera ops whose results are unused (to a fixed point)."""
    changed = True
    while changed:
        changed = False
        # Reverse walk order visits users before producers, so chains die in one sweep.
        for op in reversed(walk_ops(module)):
            if op.name.startswith("tessera.") and is_pure(op.name) and _unused(op):
                op.erase()
                changed = True


def _key(op: ir.Operation) -> tuple:
    attributes = tuple(sorted((name, str(a)) for name, a in op.attributes.items()))
    operands = tuple(op.operands)  # values compare and hash by identity
    results = tuple(str(r.type) for r in op.results)
    return (op.name, operands, attributes, results)


@register_pass("tessera-cse")
def deduplicate_tessera_ops(module: ir.Operation, options: NoOptions) -> None:
    """Replace a pure tessera op by an identical one that dominates it (same block or an
    enclosing one), then erase it."""
    for region in module.regions:
        for block in region.blocks:
            _cse_block(block, {})


def _cse_block(block: ir.Block, seen: dict[tuple, ir.Operation]) -> None:
    scope = dict(seen)
    for op in [o.operation for o in block.operations]:
        if op.name.startswith("tessera.") and is_pure(op.name) and not op.regions:
            key = _key(op)
            earlier = scope.get(key)
            if earlier is not None:
                for old, new in zip(op.results, earlier.results, strict=True):
                    old.replace_all_uses_with(new)
                op.erase()
                continue
            scope[key] = op
        for region in op.regions:
            for inner in region.blocks:
                _cse_block(inner, scope)
