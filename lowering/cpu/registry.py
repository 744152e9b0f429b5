"""CPU lowering rules, keyed by op name.

A rule replaces one tessera op by upstream code (usually a call to a kernel function written
for the op's exact types and attributes) and erases it. The driver looks every tessera op up
here and fails at the op's location when no rule exists, rather than skipping it.
"""

from __future__ import annotations

from collections.abc import Callable

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import LoweringError

from .host import Host

Rule = Callable[[ir.Operation, Host], None]

RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Registers the decorated function as the CPU lowering of op ``name``."""

    def register(fn: Rule) -> Rule:
        if name in RULES:
            raise ValueError(f"cpu lowering for '{name}' is registered twice")
        RULES[name] = fn
        return fn

    return register


def lowering_error(op: ir.Operation, message: str) -> LoweringError:
    """An error at ``op``'s location, prefixed with the op name as MLIR's diagnostics are."""
    return LoweringError(f"'{op.name}' op {message}", source_location(op.location))


def lower_op(op: ir.Operation, target: Host) -> None:
    """Applies ``op``'s rule; raises ``LoweringError`` at ``op`` when it has none."""
    found = RULES.get(op.name)
    if found is None:
        raise LoweringError(f"no cpu lowering for '{op.name}'", source_location(op.location))
    found(op, target)
