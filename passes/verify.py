"""tessera-verify: checks every tessera op against its schema and verifier."""

from __future__ import annotations

from mlir import ir

from tessera.dialects import verify_module
from tessera.pass_registry import NoOptions, register_pass


@register_pass("tessera-verify")
def verify(module: ir.Operation, options: NoOptions) -> None:
    """Verify every tessera op (operands, results, attributes, op-specific rules).

    Runs implicitly after parsing and after each tessera pass; useful on its own after
    upstream passes."""
    problems = verify_module(module)
    if problems:
        raise problems[0]
