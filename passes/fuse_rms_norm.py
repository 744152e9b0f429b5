"""tessera-fuse-rms-norm: ``x · rsqrt(mean(x²) + eps) · (offset + w)`` becomes
``tessera.norm.rms``.

The chain is anchored at its one reduction and read forwards:

    x² (mulf x, x | powf x, 2) → linalg.reduce sum over the last axis → ÷ D (or × 1/D) → + eps
      → rsqrt → broadcast over the last axis → × x → × (offset + w) [→ truncf]

Unit-dim reshapes (keepdim) may sit anywhere before the broadcast. The arithmetic must be in
f32, as the fused op computes: x is f32, or an ``arith.extf`` whose ``arith.truncf`` back to
x's type ends the chain (Gemma), in which case the fused op reads and returns the narrow x.
The weight side is read back from the last multiply through a broadcast, an extf and an
offset add, in any order; it stops early where a value has other users, taking that value
as the weight (still exact: the fused op then reads the wider or offset weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir

from tessera.dialects import RmsNorm
from tessera.ir_types import element_type, shaped_dims
from tessera.pass_registry import NoOptions, register_pass

from .constant_values import is_zero_fill, splat_value
from .linear_match import FLOAT_TYPES
from .match import (
    has_one_use,
    i64_array_attr,
    other_operand,
    producer,
    producer_named,
    replace_with_op,
    rewrite_anchors,
    single_user,
    used_only_by,
    users,
)

Shape = list[int | None]

# 1/D written as a f32 constant is off by at most half an f32 ulp.
_RECIPROCAL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RmsNormMatch:
    x: ir.Value
    w: ir.Value
    eps: float
    offset: float
    root: ir.Operation
    ops: tuple[ir.Operation, ...]


def _float_splat(value: ir.Value | None) -> float | None:
    found = splat_value(value) if value is not None else None
    return found if isinstance(found, float) and math.isfinite(found) else None


def _positive_splat(value: ir.Value | None) -> float | None:
    found = _float_splat(value)
    return found if found is not None and found > 0 else None


def _sums(reduce: ir.Operation) -> bool:
    """The reduce body is ``yield addf(acc, element)``."""
    body = reduce.regions[0].blocks[0]
    ops = [o.operation for o in body.operations]
    arguments = list(body.arguments)
    if len(ops) != 2 or len(arguments) != 2:
        return False
    add, terminator = ops
    if add.name != "arith.addf" or terminator.name != "linalg.yield":
        return False
    return set(add.operands) == set(arguments) and list(terminator.operands) == [add.results[0]]


def sum_of_squares(reduce: ir.Operation) -> tuple[ir.Value, ir.Operation] | None:
    """(x, the squaring op) when ``reduce`` sums x² in f32 over x's last axis from zero."""
    if reduce.name != "linalg.reduce" or len(reduce.operands) != 2 or len(reduce.results) != 1:
        return None
    squares, init = reduce.operands
    rank = len(shaped_dims(squares))
    if rank < 1 or element_type(squares) != "f32" or element_type(init) != "f32":
        return None
    if i64_array_attr(reduce, "dimensions") != [rank - 1]:
        return None
    if not is_zero_fill(init) or not _sums(reduce) or not has_one_use(squares):
        return None
    square = producer(squares)
    if square is None:
        return None
    if square.name == "arith.mulf" and square.operands[0] == square.operands[1]:
        return square.operands[0], square
    if square.name == "math.powf" and _float_splat(square.operands[1]) == 2.0:
        return square.operands[0], square
    return None


def _is_mean(op: ir.Operation, value: ir.Value, width: int) -> bool:
    """``op`` divides ``value`` by the width, or multiplies it by 1/width."""
    if op.name == "arith.divf":
        return op.operands[0] == value and _float_splat(op.operands[1]) == float(width)
    if op.name == "arith.mulf":
        factor = _float_splat(other_operand(op, value))
        return factor is not None and abs(factor * width - 1.0) <= _RECIPROCAL_TOLERANCE
    return False


def _is_row_reshape(op: ir.Operation, value: ir.Value, rows: Shape, kept: Shape) -> bool:
    """A reshape between the reduced shape and its keepdim form (a trailing unit dim)."""
    if op.name not in ("tensor.expand_shape", "tensor.collapse_shape"):
        return False
    row_shapes = (rows, kept)
    return (
        op.operands[0] == value
        and shaped_dims(value) in row_shapes
        and shaped_dims(op.results[0]) in row_shapes
    )


def _is_row_broadcast(op: ir.Operation, value: ir.Value, rows: Shape, full: Shape) -> bool:
    """A broadcast of the reduced shape over the last axis."""
    return (
        op.name == "linalg.broadcast"
        and op.operands[0] == value
        and shaped_dims(value) == rows
        and shaped_dims(op.results[0]) == full
        and i64_array_attr(op, "dimensions") == [len(full) - 1]
    )


def _normalise(
    reduce: ir.Operation, x: ir.Value, width: int
) -> tuple[float, ir.Operation, list[ir.Operation]] | None:
    """(eps, the ``× x`` op, the ops from the reduce to it) for sum → mean → + eps → rsqrt →
    broadcast → × x, reshapes of the per-row value allowed before the broadcast."""
    full = shaped_dims(x)
    rows, kept = full[:-1], [*full[:-1], 1]
    value = reduce.results[0]
    ops: list[ir.Operation] = []
    stage = "mean"
    broadcast = False
    eps = 0.0
    while True:
        op = single_user(value)
        if op is None or len(op.results) != 1:
            return None
        other = other_operand(op, value)
        if not broadcast and _is_row_reshape(op, value, rows, kept):
            pass
        elif not broadcast and _is_row_broadcast(op, value, rows, full):
            broadcast = True
        elif stage == "mean" and _is_mean(op, value, width):
            stage = "eps"
        elif stage == "eps" and op.name == "arith.addf" and (found := _positive_splat(other)):
            eps = found
            stage = "rsqrt"
        elif stage == "rsqrt" and op.name == "math.rsqrt":
            stage = "x"
        elif stage == "x" and broadcast and op.name == "arith.mulf" and other == x:
            ops.append(op)
            return eps, op, ops
        else:
            return None
        ops.append(op)
        value = op.results[0]


def _weight(value: ir.Value, full: Shape) -> tuple[ir.Value, float, list[ir.Operation]] | None:
    """(w, offset, ops) when ``value`` is ``offset + w`` broadcast over x's leading dims, read
    through at most one broadcast, one extf and one f32 offset add (any order)."""
    ops: list[ir.Operation] = []
    offset: float | None = None
    seen: set[str] = set()
    current = value
    while len(users(current)) == 1:
        op = producer(current)
        if op is None or op.name in seen:
            break
        if op.name == "linalg.broadcast":
            if i64_array_attr(op, "dimensions") != list(range(len(full) - 1)):
                break
            following = op.operands[0]
        elif op.name == "arith.extf":
            following = op.operands[0]
        elif op.name == "arith.addf" and element_type(current) == "f32":
            lhs, rhs = op.operands
            if (constant := _float_splat(rhs)) is not None:
                offset, following = constant, lhs
            elif (constant := _float_splat(lhs)) is not None:
                offset, following = constant, rhs
            else:
                break
        else:
            break
        seen.add(op.name)
        ops.append(op)
        current = following
    if shaped_dims(current) != [full[-1]] or element_type(current) not in FLOAT_TYPES:
        return None
    return current, offset if offset is not None else 0.0, ops


def match_rms_norm(reduce: ir.Operation) -> RmsNormMatch | None:
    """The RMS norm whose sum of squares is ``reduce``, or None."""
    found = sum_of_squares(reduce)
    if found is None:
        return None
    x, square = found
    full = shaped_dims(x)
    width = full[-1]
    if width is None:
        return None
    normalised = _normalise(reduce, x, width)
    if normalised is None:
        return None
    eps, times_x, row_ops = normalised
    scale = single_user(times_x.results[0])
    other = other_operand(scale, times_x.results[0]) if scale is not None else None
    if scale is None or scale.name != "arith.mulf" or other is None:
        return None
    weight = _weight(other, full)
    if weight is None:
        return None
    w, offset, weight_ops = weight
    ops = [square, reduce, *row_ops, scale, *weight_ops]
    # Gemma: computed in f32 between extf and truncf; the fused op takes the narrow x.
    widen = producer_named(x, "arith.extf")
    narrow = single_user(scale.results[0])
    if (
        widen is not None
        and narrow is not None
        and narrow.name == "arith.truncf"
        and str(narrow.results[0].type) == str(widen.operands[0].type)
        and used_only_by(x, [square, times_x])
    ):
        return RmsNormMatch(widen.operands[0], w, eps, offset, narrow, (*ops, widen, narrow))
    return RmsNormMatch(x, w, eps, offset, scale, tuple(ops))


def rewrite_rms_norm(found: RmsNormMatch) -> None:
    replace_with_op(
        found.root, RmsNorm, [found.x, found.w], found.ops, eps=found.eps, offset=found.offset
    )


@register_pass("tessera-fuse-rms-norm")
def fuse_rms_norm(module: ir.Operation, options: NoOptions) -> None:
    """Fuse x · rsqrt(mean(x²) + eps) · (offset + w) over the last axis into tessera.norm.rms
    {eps, offset}: computed in f32 (x f32, or extf'd and truncf'd back as Gemma does), mean as
    a sum divided by (or times the reciprocal of) the static width, x² as mulf or powf 2,
    offset 1.0 for Gemma's (1 + w) and 0.0 for a plain weight; any rank."""
    rewrite_anchors(module, ["linalg.reduce"], match_rms_norm, rewrite_rms_norm)
