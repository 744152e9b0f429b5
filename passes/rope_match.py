"""The rope pattern of the high-level IR: x·cos + rotate_half(x)·sin, with
rotate_half(x) = concat(-x[..., d/2:], x[..., :d/2]) along the last axis.

The arithmetic around x is matched by structure (either operand order of the add and the
multiplications); the cos/sin tables by their values (``rope_tables``). The matcher is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import shaped_dims

from .match import has_one_use, i64_array_attr, int_attr, producer_named
from .rope_tables import Positions, read_tables

ANCHORS = ("arith.addf",)


@dataclass(frozen=True)
class RopeMatch:
    """Everything the rewrite needs: the add to replace, the rotated x as the pattern reads
    it, the positions and the rotation's attributes, and the matched ops."""

    root: ir.Operation
    x: ir.Value  # [B, H, S, D] when seq_axis is 2, [B, S, H, D] when it is 1
    positions: Positions  # the integer positions, [B, S] or a view of them
    theta: float
    scaling: float
    rotary_dim: int
    seq_axis: int
    matched: tuple[ir.Operation, ...]


def match_rope(root: ir.Operation) -> RopeMatch | None:
    """The rope pattern ending at ``root`` (an ``arith.addf`` on [B, ·, ·, D]), or None."""
    if root.name not in ANCHORS or len(shaped_dims(root.results[0])) != 4:
        return None
    for plain, rotated in (
        (root.operands[0], root.operands[1]),
        (root.operands[1], root.operands[0]),
    ):
        found = _rotation(plain, rotated)
        if found is None:
            continue
        x, cos, sin, ops = found
        tables = read_tables(x, cos, sin)
        head_dim = shaped_dims(x)[3]
        if tables is None or head_dim is None:  # (the rotation already needs a static one)
            return None
        return RopeMatch(
            root=root,
            x=x,
            positions=tables.positions,
            theta=tables.theta,
            scaling=tables.scaling,
            rotary_dim=head_dim,
            seq_axis=tables.seq_axis,
            matched=(root, *ops, *tables.ops),
        )
    return None


def _rotation(
    plain: ir.Value, rotated: ir.Value
) -> tuple[ir.Value, ir.Value, ir.Value, list[ir.Operation]] | None:
    """(x, cos, sin, ops) for plain = x·cos and rotated = rotate_half(x)·sin."""
    times_cos = producer_named(plain, "arith.mulf")
    times_sin = producer_named(rotated, "arith.mulf")
    if times_cos is None or times_sin is None:
        return None
    if not has_one_use(plain) or not has_one_use(rotated):
        return None
    for half, sin in (
        (times_sin.operands[0], times_sin.operands[1]),
        (times_sin.operands[1], times_sin.operands[0]),
    ):
        found = _rotate_half_source(half)
        if found is None:
            continue
        x, ops = found
        a, b = times_cos.operands
        if a == x:
            return x, b, sin, [times_cos, times_sin, *ops]
        if b == x:
            return x, a, sin, [times_cos, times_sin, *ops]
    return None


def _rotate_half_source(value: ir.Value) -> tuple[ir.Value, list[ir.Operation]] | None:
    """x for ``value`` = concat(-x[..., d/2:], x[..., :d/2]) along the last axis."""
    concat = producer_named(value, "tensor.concat")
    if concat is None or len(concat.operands) != 2 or not has_one_use(value):
        return None
    rank = len(shaped_dims(value))
    if int_attr(concat, "dim") != rank - 1:
        return None
    negate = producer_named(concat.operands[0], "arith.negf")
    low = producer_named(concat.operands[1], "tensor.extract_slice")
    if negate is None or low is None:
        return None
    high = producer_named(negate.operands[0], "tensor.extract_slice")
    if high is None:
        return None
    x = low.operands[0]
    if high.operands[0] != x:
        return None
    head_dim = shaped_dims(x)[-1]
    if head_dim is None or head_dim % 2 or len(shaped_dims(x)) != rank:
        return None
    half = head_dim // 2
    if not _is_half(low, rank, 0, half) or not _is_half(high, rank, half, half):
        return None
    pieces = (concat.operands[0], concat.operands[1], negate.operands[0])
    if not all(has_one_use(v) for v in pieces):
        return None
    return x, [concat, negate, low, high]


def _is_half(slice_op: ir.Operation, rank: int, offset: int, size: int) -> bool:
    """A unit-stride slice starting at 0 in every dim but the last (at ``offset``), taking
    ``size`` lanes of the last; the other sizes follow from the elementwise ops around."""
    offsets = i64_array_attr(slice_op, "static_offsets")
    sizes = i64_array_attr(slice_op, "static_sizes")
    strides = i64_array_attr(slice_op, "static_strides")
    return (
        offsets == [0] * (rank - 1) + [offset]
        and sizes is not None
        and sizes[-1] == size
        and strides == [1] * rank
        and len(shaped_dims(slice_op.results[0])) == rank
    )
