"""Runs every tessera op's schema and verifier over a module."""

from __future__ import annotations

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import VerifyError
from tessera.ir_walk import walk_ops
from tessera.schema import SCHEMAS

from .upstream_gaps import CHECKS as UPSTREAM_CHECKS


def verify_op(op: ir.Operation) -> VerifyError | None:
    """The first problem with one tessera op, or None when it is valid."""
    schema = SCHEMAS.get(op.name)
    if schema is None:
        known = ", ".join(sorted(SCHEMAS))
        return VerifyError(
            f"unknown op '{op.name}' in the tessera dialect (known: {known})",
            source_location(op.location),
        )
    view = schema(op)
    try:
        view.verify_schema()
        view.verify()
    except VerifyError as problem:
        return problem
    return None


def verify_module(root: ir.Operation) -> list[VerifyError]:
    """Every tessera op's problem in ``root``, and those of upstream ops that MLIR's verifiers
    miss (``upstream_gaps``), in walk order."""
    problems = []
    for op in walk_ops(root):
        if op.name.startswith("tessera."):
            problems.append(verify_op(op))
        elif op.name in UPSTREAM_CHECKS:
            problems.append(UPSTREAM_CHECKS[op.name](op))
    return [p for p in problems if p is not None]
