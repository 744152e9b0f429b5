"""Checks on upstream ops that MLIR's own verifiers miss, found by fuzzing tessera-opt.

Each check is one function keyed by op name; ``verify_module`` runs them next to the tessera
schemas, so IR that MLIR accepts but means nothing stops at the verifier with a located error
instead of reaching a pass that trusts it.
"""

from __future__ import annotations

from collections.abc import Callable

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import VerifyError

Check = Callable[[ir.Operation], "VerifyError | None"]


def _reassociation(op: ir.Operation) -> VerifyError | None:
    """tensor.expand_shape / collapse_shape: MLIR checks each reassociation index only modulo
    2^32 (4294967296 passes as 0), and matchers then index the shape with the real value."""
    expanded = op.results[0] if op.name == "tensor.expand_shape" else op.operands[0]
    if not isinstance(expanded.type, ir.ShapedType) or not ir.ShapedType(expanded.type).has_rank:
        return None
    rank = ir.ShapedType(expanded.type).rank
    for group in ir.ArrayAttr(op.attributes["reassociation"]):
        for index in ir.ArrayAttr(group):
            value = ir.IntegerAttr(index).value
            if not 0 <= value < rank:
                return VerifyError(
                    f"'{op.name}' op reassociation index {value} is out of range for the "
                    f"expanded rank {rank}",
                    source_location(op.location),
                )
    return None


CHECKS: dict[str, Check] = {
    "tensor.collapse_shape": _reassociation,
    "tensor.expand_shape": _reassociation,
}
