"""Reading through reshapes: what a chain of ``tensor.expand_shape``/``collapse_shape`` ops
does to its source's dims, whatever the order and grouping of the ops that wrote it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeGuard

from mlir import ir

from tessera.ir_types import shaped_dims

from .match import producer, producer_named, reassociation

RESHAPES = ("tensor.expand_shape", "tensor.collapse_shape")


def through_reshapes(value: ir.Value) -> ir.Value:
    """Follows ``tensor.expand_shape``/``collapse_shape`` back to their source."""
    op = producer(value)
    while op is not None and op.name in RESHAPES:
        value = op.operands[0]
        op = producer(value)
    return value


# A reshape chain relates its source's dims to its result's dims as consecutive blocks: each
# block is (source dims, result dims) with equal element counts, e.g. collapsing [B, H, S, D]
# by [[0, 1], [2], [3]] gives ((0, 1), (0,)), ((2,), (1,)), ((3,), (2,)). Composing two
# relations merges blocks that share middle dims; the blocks are then split again where the
# sizes prove it, so collapse-then-expand by the same groups reads as the identity.
Relation = list[tuple[tuple[int, ...], tuple[int, ...]]]


def _reshape_relation(op: ir.Operation) -> Relation:
    groups = reassociation(op)
    if op.name == "tensor.collapse_shape":
        return [(tuple(g), (k,)) for k, g in enumerate(groups)]
    return [((k,), tuple(g)) for k, g in enumerate(groups)]


def _compose(first: Relation, second: Relation) -> Relation:
    """The relation A→C of A→B (``first``) followed by B→C (``second``)."""
    out: Relation = []
    i = j = covered_first = covered_second = 0
    a_dims: list[int] = []
    c_dims: list[int] = []
    while i < len(first) or j < len(second):
        if j >= len(second) or (i < len(first) and covered_first <= covered_second):
            a_dims += first[i][0]
            covered_first += len(first[i][1])
            i += 1
        else:
            c_dims += second[j][1]
            covered_second += len(second[j][0])
            j += 1
        if covered_first == covered_second:
            out.append((tuple(a_dims), tuple(c_dims)))
            a_dims, c_dims = [], []
    return out


def _static(dims: Sequence[int | None]) -> TypeGuard[Sequence[int]]:
    return all(d is not None for d in dims)


def _proven_equal(a: Sequence[int | None], b: Sequence[int | None]) -> bool:
    return _static(a) and _static(b) and math.prod(a) == math.prod(b)


def _refine(
    block: tuple[tuple[int, ...], tuple[int, ...]],
    source: Sequence[int | None],
    result: Sequence[int | None],
) -> Relation:
    """Splits a block where a cut provably separates equal element counts (unit dims
    dropped first): either both prefixes or both remainders are static and agree."""
    src = tuple(d for d in block[0] if source[d] != 1)
    dst = tuple(d for d in block[1] if result[d] != 1)
    out: Relation = []
    while True:
        sizes_src = [source[d] for d in src]
        sizes_dst = [result[d] for d in dst]
        cuts = sorted(
            ((i, j) for i in range(1, len(src)) for j in range(1, len(dst))),
            key=lambda c: c[0] + c[1],
        )
        cut = next(
            (
                (i, j)
                for i, j in cuts
                if _proven_equal(sizes_src[:i], sizes_dst[:j])
                or _proven_equal(sizes_src[i:], sizes_dst[j:])
            ),
            None,
        )
        if cut is None:
            if src or dst:
                out.append((src, dst))
            return out
        out.append((src[: cut[0]], dst[: cut[1]]))
        src, dst = src[cut[0] :], dst[cut[1] :]


def _normalised(relation: Relation, source: ir.Value, result: ir.Value) -> Relation:
    source_shape, result_shape = shaped_dims(source), shaped_dims(result)
    out: Relation = []
    for block in relation:
        out += _refine(block, source_shape, result_shape)
    return out


def reshape_source(
    value: ir.Value, groups: Sequence[Sequence[int]], expand: bool = False
) -> tuple[ir.Value, list[ir.Operation]] | None:
    """The nearest value up ``value``'s chain of expand/collapse_shape ops (``value`` itself
    included) of which ``value`` is the collapse by ``groups`` (or, with ``expand``, the
    expansion by ``groups``), with the reshape ops in between; None when there is none.

    Reads composed and split reshapes by what they do, so that canonicalize folding two
    collapses into one does not hide a pattern; unit dims are ignored."""
    parts: list[tuple[int, ...]] = [tuple(int(d) for d in g) for g in groups]
    if expand:
        expected: Relation = [((k,), g) for k, g in enumerate(parts)]
        source_rank, result_rank = len(parts), sum(len(g) for g in parts)
    else:
        expected = [(g, (k,)) for k, g in enumerate(parts)]
        source_rank, result_rank = sum(len(g) for g in parts), len(parts)
    if len(shaped_dims(value)) != result_rank:
        return None
    relation: Relation = [((k,), (k,)) for k in range(result_rank)]
    current, ops = value, list[ir.Operation]()
    while True:
        if len(shaped_dims(current)) == source_rank and _normalised(
            relation, current, value
        ) == _normalised(expected, current, value):
            return current, ops
        op = producer_named(current, *RESHAPES)
        if op is None:
            return None
        relation = _compose(_reshape_relation(op), relation)
        ops.append(op)
        current = op.operands[0]
