"""Rope positions in the functions ``tessera-insert-kv-cache`` derives: every
``tessera.rope.apply`` must read the sequence index (checked by evaluating its positions at
sample points), which the derived functions replace by their ``positions`` argument; the
sequence index must then feed nothing else."""

from __future__ import annotations

from collections.abc import Iterator

from mlir import ir
from mlir.dialects import tensor

from tessera.diagnostics import source_location
from tessera.errors import PassError
from tessera.ir_walk import walk_ops

from .match import producer
from .scalar_eval import NotEvaluable
from .tensor_eval import ElementEvaluator, OutOfBounds

# Points (batch, token) at which a rope's positions must equal the token index.
_PROBES = ((0, 0), (0, 1), (1, 2), (2, 5), (3, 17), (1, 130))
# Ops that compute positions from sizes alone; those left unused are erased, and the
# sequence index must go with them.
_POSITION_CHAIN = frozenset(
    {
        "linalg.generic",
        "linalg.broadcast",
        "linalg.transpose",
        "tensor.collapse_shape",
        "tensor.expand_shape",
        "tensor.cast",
        "tensor.empty",
        "tensor.dim",
        "arith.index_cast",
        "arith.extsi",
        "arith.trunci",
    }
)


def _error(message: str, op: ir.Operation) -> PassError:
    return PassError(message, source_location(op.location))


def is_sequence_index(value: ir.Value) -> bool:
    """Whether ``value`` [B, S] holds the token index s at every (b, s)."""
    evaluator = ElementEvaluator()
    try:
        return all(evaluator.at(value, point) == point[1] for point in _PROBES)
    except (NotEvaluable, OutOfBounds):
        return False


def _sweep_positions(value: ir.Value, sources: list[ir.Operation]) -> None:
    """Erases the ops that computed a replaced positions operand once nothing uses them,
    dropping each erased one from ``sources`` (an erased op's handle must not be touched)."""
    pending = [producer(value)]
    while pending:
        op = pending.pop()
        if op is None or op.name not in _POSITION_CHAIN:
            continue
        if any(list(result.uses) for result in op.results):
            continue
        feeding = [producer(v) for v in op.operands]
        sources[:] = [s for s in sources if s != op]
        pending = [p for p in pending if p != op]
        op.erase()
        pending += feeding


def _iota_sources(value: ir.Value) -> Iterator[ir.Operation]:
    """The input-free ``linalg.generic`` ops behind a positions value (the sequence index)."""
    seen: list[ir.Operation] = []
    pending = [producer(value)]
    while pending:
        op = pending.pop()
        if op is None or op.name not in _POSITION_CHAIN or any(op == s for s in seen):
            continue
        seen.append(op)
        if op.name == "linalg.generic" and not _generic_inputs(op):
            yield op
        pending += [producer(v) for v in op.operands]


def _generic_inputs(op: ir.Operation) -> list[ir.Value]:
    segments = ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"])
    return list(op.operands)[: int(segments[0])]


def use_positions(function: ir.Operation, positions: ir.Value) -> None:
    """Every rope reads ``positions``; the sequence index they read must then be dead."""
    sources: list[ir.Operation] = []
    for op in walk_ops(function):
        if op.name != "tessera.rope.apply":
            continue
        old = op.operands[1]
        if not is_sequence_index(old):
            raise _error(
                "rope positions are not the sequence index; the cached functions cannot "
                "give them per-token positions",
                op,
            )
        for source in _iota_sources(old):
            if not any(source == s for s in sources):
                sources.append(source)
        replacement = positions
        if str(positions.type) != str(old.type):
            with ir.InsertionPoint(op), op.location:
                replacement = tensor.CastOp(old.type, positions).result
        op.operands[1] = replacement
        _sweep_positions(old, sources)
    for source in sources:
        consumer = _consumer(source)
        if consumer is not None:
            raise _error(
                f"the sequence index also feeds '{consumer.name}'; only rope positions can "
                "follow the tokens' places in the cache",
                consumer,
            )


def _consumer(source: ir.Operation) -> ir.Operation | None:
    """The first op past the reshapes and broadcasts of ``source`` that uses its values."""
    pending = [source]
    while pending:
        op = pending.pop(0)
        for result in op.results:
            for use in result.uses:
                user = use.owner.operation
                if user.name not in _POSITION_CHAIN:
                    return user
                pending.append(user)
    return None
