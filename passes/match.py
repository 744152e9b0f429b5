"""Small, pure helpers that fusion patterns use to read use-def chains.

Each returns plain data or None (no match) and never changes the IR, except the rewrite
helpers at the end: ``replace_and_sweep`` replaces a matched root so that the matched ops and
the constants, splats and reshapes that only fed them disappear with the match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.schema import OpDef


def producer(value: ir.Value) -> ir.Operation | None:
    """The op defining ``value``, or None for a block argument."""
    if isinstance(value, ir.OpResult):
        return value.owner.operation
    return None


def producer_named(value: ir.Value, *names: str) -> ir.Operation | None:
    op = producer(value)
    return op if op is not None and op.name in names else None


def users(value: ir.Value) -> list[ir.Operation]:
    return [use.owner.operation for use in value.uses]


def has_one_use(value: ir.Value) -> bool:
    uses = list(value.uses)
    return len(uses) == 1


def used_only_by(value: ir.Value, allowed: Iterable[ir.Operation]) -> bool:
    """True when every user of ``value`` is one of ``allowed`` (a matched chain's ops)."""
    allowed_ops = list(allowed)
    return all(any(user == op for op in allowed_ops) for user in users(value))


def int_attr(op: ir.Operation, name: str) -> int | None:
    attr = op.attributes[name] if name in op.attributes else None
    return int(attr.value) if isinstance(attr, ir.IntegerAttr) else None


def i64_array_attr(op: ir.Operation, name: str) -> list[int] | None:
    if name not in op.attributes:
        return None
    attr = op.attributes[name]
    return [int(v) for v in attr] if isinstance(attr, ir.DenseI64ArrayAttr) else None


def reassociation(op: ir.Operation) -> list[list[int]]:
    """The reassociation groups of an expand_shape/collapse_shape."""
    groups = ir.ArrayAttr(op.attributes["reassociation"])
    return [[ir.IntegerAttr(i).value for i in ir.ArrayAttr(group)] for group in groups]


def matmul_maps(op: ir.Operation) -> list[str] | None:
    """The indexing maps of a linalg.matmul/batch_matmul as text, None when default."""
    if "indexing_maps" not in op.attributes:
        return None
    return [str(m) for m in ir.ArrayAttr(op.attributes["indexing_maps"])]


def is_transpose_b_matmul(op: ir.Operation) -> bool:
    """A 2-D ``linalg.matmul`` computing A[m,k]·B[n,k]ᵀ through its indexing maps."""
    if op.name != "linalg.matmul":
        return False
    maps = matmul_maps(op)
    if maps is None or len(maps) != 3:
        return False
    normalised = [m.replace(" ", "") for m in maps]
    return normalised == [
        "affine_map<(d0,d1,d2)->(d0,d2)>",
        "affine_map<(d0,d1,d2)->(d1,d2)>",
        "affine_map<(d0,d1,d2)->(d0,d1)>",
    ]


def single_user(value: ir.Value) -> ir.Operation | None:
    """The op using ``value``, when it has exactly one use."""
    found = users(value)
    return found[0] if len(found) == 1 else None


def other_operand(op: ir.Operation, value: ir.Value) -> ir.Value | None:
    """For a binary op with ``value`` as exactly one of its operands, the other one."""
    if len(op.operands) != 2:
        return None
    lhs, rhs = op.operands
    if lhs == rhs or value not in (lhs, rhs):
        return None
    return rhs if lhs == value else lhs


# Ops with no side effects that only feed a matched chain: constants, splats, empty tensors,
# shape arithmetic, reshapes and broadcasts. A rewrite erases those left without users.
_SWEEPABLE_PREFIXES = ("arith.", "math.")
_SWEEPABLE = frozenset(
    {
        "tensor.dim",
        "tensor.empty",
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.cast",
        "linalg.fill",
        "linalg.broadcast",
    }
)


def _sweepable(op: ir.Operation) -> bool:
    return op.name in _SWEEPABLE or op.name.startswith(_SWEEPABLE_PREFIXES)


def erase_unused(candidates: Iterable[ir.Operation]) -> None:
    """Erases every side-effect-free op among ``candidates`` that has no users, then its
    producers that became unused in turn (constants, fills, empty tensors, reshapes, ...)."""
    pending = [op for op in candidates if _sweepable(op)]
    while pending:
        op = pending.pop()
        if any(list(result.uses) for result in op.results):
            continue
        # Drop duplicates first: once erased, the op must not be touched again.
        pending = [other for other in pending if other != op]
        feeding = [producer(value) for value in op.operands]
        op.erase()
        pending += [p for p in feeding if p is not None and _sweepable(p)]


def replace_and_sweep(
    root: ir.Operation, replacement: Sequence[ir.Value], matched: Iterable[ir.Operation]
) -> None:
    """Replaces ``root``'s results, erases every matched op left without users (users before
    producers), then ``erase_unused`` on what fed them, so that the splats, empty tensors and
    reshapes of a fused chain go with it.

    An erased op's Python handles are invalidated (comparing one raises), so each op is taken
    out of the pending list before it is erased."""
    pending: list[ir.Operation] = []
    for op in [root, *matched]:
        if not any(op == seen for seen in pending):
            pending.append(op)
    feeding: list[ir.Operation] = []
    for op in pending:
        for value in op.operands:
            found = producer(value)
            if found is not None and not any(found == m for m in pending):
                feeding.append(found)
    for old, new in zip(root.results, replacement, strict=True):
        old.replace_all_uses_with(new)
    while True:
        dead = next(
            (i for i, op in enumerate(pending) if all(not list(r.uses) for r in op.results)),
            None,
        )
        if dead is None:
            break
        pending.pop(dead).erase()
    erase_unused(feeding)


def replace_with_op(
    root: ir.Operation,
    schema: type[OpDef],
    operands: Sequence[ir.Value],
    matched: Iterable[ir.Operation],
    **attributes: Any,
) -> None:
    """Builds the op of ``schema`` on ``operands`` (with ``attributes``) before ``root``, with
    root's result type, and replaces ``root`` by it (``replace_and_sweep`` over ``matched``)."""
    with root.location, ir.InsertionPoint(root):
        fused = schema.build(operands, [root.results[0].type], loc=root.location, **attributes)
    replace_and_sweep(root, [fused.op.results[0]], matched)


def rewrite_anchors(
    module: ir.Operation,
    anchors: Iterable[str],
    match: Callable[[ir.Operation], object | None],
    rewrite: Callable[[Any], None],
) -> int:
    """Runs ``match`` on every op named in ``anchors`` (post-order) and ``rewrite`` on each
    match; returns the number of rewrites.

    The ops are listed before any rewrite, so a rewrite may erase its anchor, ops listed
    before it (its producers) and ops that are not anchors, but never a later anchor."""
    names = frozenset(anchors)
    count = 0
    for op in [o for o in walk_ops(module) if o.name in names]:
        found = match(op)
        if found is None:
            continue
        rewrite(found)
        count += 1
    return count
