"""Reading rope's cos/sin tables: which positions they rotate by, theta, scaling, layout.

The tables are recognised by their values, not by how they were written: each element is
read (``tensor_eval.ElementEvaluator``) with the integer positions tensor as a leaf. With every
position 1, atan2(sin, cos) gives the frequency of each lane; the frequencies must repeat
across the two halves (concat(f, f)), fit theta^(-2i/d) / scaling, and the tables must have
unit amplitude (a scaling factor on cos/sin is not rope.apply). Then, with positions that
differ per batch row and per token, every probed element must equal cos/sin(position ·
frequency) for the axis that is the sequence — which also tells the [B, H, S, D] layout from
[B, S, H, D].

The positions are the integer tensor the tables convert with ``arith.sitofp``: [B, S] as
rope.apply takes them, or a view of that with unit dims ([1, S, 1] as a front end may write
``position_ids[..., None]``), which the rewrite reshapes to [B, S].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import shaped_dims

from .match import producer
from .reshape_view import RESHAPES
from .rope_frequencies import fit_frequencies
from .scalar_eval import NotEvaluable
from .tensor_eval import ElementEvaluator, Index, OutOfBounds

# The most ops read while looking for the positions behind the tables.
_MAX_TABLE_OPS = 256
_POSITION_VIEWS = (*RESHAPES, "linalg.broadcast", "tensor.cast")
_AMPLITUDE_TOLERANCE = 1e-6
_VALUE_TOLERANCE = 1e-9
_BATCH_HEAD_PROBES = ((0, 0), (1, 2), (3, 1))
_TOKEN_PROBES = (0, 1, 2, 5, 13, 31, 200)


@dataclass(frozen=True)
class Positions:
    """An integer tensor holding one position per batch row and token: dim 0 is the batch
    (rank ≥ 2), ``token_axis`` the tokens, every other dim a static 1."""

    value: ir.Value
    token_axis: int

    @property
    def batch_axis(self) -> int | None:
        return 0 if len(shaped_dims(self.value)) >= 2 else None

    @property
    def single_row(self) -> bool:
        """One row of positions shared by the whole batch."""
        return self.batch_axis is None or shaped_dims(self.value)[0] == 1

    def row_and_token(self, index: Index) -> tuple[int, int]:
        batch = self.batch_axis
        return (0 if batch is None else index[batch]), index[self.token_axis]


@dataclass(frozen=True)
class RopeTables:
    """The rotation the cos/sin tables apply to x [B, H, S, D] or [B, S, H, D]."""

    positions: Positions
    theta: float
    scaling: float
    seq_axis: int  # 2 for [B, H, S, D], 1 for [B, S, H, D]
    ops: tuple[ir.Operation, ...]  # the ops computing the tables


def read_tables(x: ir.Value, cos: ir.Value, sin: ir.Value) -> RopeTables | None:
    """The rotation by ``cos`` and ``sin`` (both shaped like ``x``), or None."""
    dims = shaped_dims(x)
    if len(dims) != 4 or dims[3] is None or dims[3] % 2 or dims[3] < 4:
        return None
    found = _table_ops(cos, sin)
    if found is None:
        return None
    positions, ops = found
    try:
        frequencies = _frequencies(cos, sin, positions, dims[3])
        if frequencies is None:
            return None
        fit = fit_frequencies(frequencies, dims[3])
        if fit is None:
            return None
        for seq_axis in (2, 1):
            if _follows(cos, sin, positions, frequencies, seq_axis):
                return RopeTables(positions, fit[0], fit[1], seq_axis, ops)
    except (NotEvaluable, OutOfBounds, ArithmeticError, ValueError, IndexError):
        return None
    return None


def _table_ops(cos: ir.Value, sin: ir.Value) -> tuple[Positions, tuple[ir.Operation, ...]] | None:
    """The one positions tensor the tables convert with ``arith.sitofp``, and the ops
    computing the tables (bounded, so that a value that is not a table is given up early)."""
    ops: list[ir.Operation] = []
    found: list[Positions] = []
    stack = [cos, sin]
    while stack:
        op = producer(stack.pop())
        if op is None or any(op == seen for seen in ops):
            continue
        ops.append(op)
        if len(ops) > _MAX_TABLE_OPS:
            return None
        if op.name == "arith.sitofp":
            positions = _positions(op.operands[0])
            if positions is None:
                return None
            if not any(positions.value == p.value for p in found):
                found.append(positions)
            continue
        stack += list(op.operands)
    if len(found) != 1:
        return None
    return found[0], tuple(ops)


def _positions(value: ir.Value) -> Positions | None:
    """The i32/i64 tensor up a chain of reshapes and broadcasts with at most one non-unit
    dim after the batch dim: the first of rank 2 ([B, S] as rope.apply takes it), else the
    first of any rank."""
    found: list[Positions] = []
    while True:
        type_ = value.type
        if isinstance(type_, ir.RankedTensorType) and str(type_.element_type) in ("i32", "i64"):
            dims = shaped_dims(value)
            first = 1 if len(dims) >= 2 else 0
            tokens = [a for a in range(first, len(dims)) if dims[a] != 1]
            if len(dims) >= 1 and len(tokens) <= 1:
                found.append(Positions(value, tokens[0] if tokens else len(dims) - 1))
        op = producer(value)
        if op is None or op.name not in _POSITION_VIEWS:
            break
        value = op.operands[0]
    ranked = [p for p in found if len(shaped_dims(p.value)) == 2]
    candidates = ranked or found
    return candidates[0] if candidates else None


def _frequencies(
    cos: ir.Value, sin: ir.Value, positions: Positions, head_dim: int
) -> list[float] | None:
    """The frequency of each of the first head_dim/2 lanes, read at position 1."""
    evaluator = ElementEvaluator({positions.value: lambda index: 1})
    angles = []
    for lane in range(head_dim):
        c = float(evaluator.at(cos, (0, 0, 0, lane)))
        s = float(evaluator.at(sin, (0, 0, 0, lane)))
        if abs(math.hypot(c, s) - 1.0) > _AMPLITUDE_TOLERANCE:
            return None
        angles.append(math.atan2(s, c))
    half = head_dim // 2
    for lane in range(half):
        if angles[lane] <= 0 or abs(angles[lane] - angles[lane + half]) > _VALUE_TOLERANCE:
            return None
    return angles[:half]


def _position(row: int, token: int) -> int:
    """The position the probes give a batch row's token: distinct across rows and tokens."""
    return 1 + 3 * token + 17 * row


def _follows(
    cos: ir.Value,
    sin: ir.Value,
    positions: Positions,
    frequencies: list[float],
    seq_axis: int,
) -> bool:
    """Every probed element is cos/sin(position · frequency), the position read at the batch
    row and the token along ``seq_axis``."""
    evaluator = ElementEvaluator(
        {positions.value: lambda index: _position(*positions.row_and_token(index))}
    )
    half = len(frequencies)
    lanes = sorted({0, 1, half - 1, half, half + 1, 2 * half - 1})
    head_axis = 3 - seq_axis
    checked = 0
    for b, h in _BATCH_HEAD_PROBES:
        for token in _TOKEN_PROBES:
            for lane in lanes:
                index = [b, 0, 0, lane]
                index[seq_axis], index[head_axis] = token, h
                try:
                    c = float(evaluator.at(cos, index))
                    s = float(evaluator.at(sin, index))
                except OutOfBounds:
                    continue
                row = 0 if positions.single_row else b
                angle = _position(row, token) * frequencies[lane % half]
                if (
                    abs(c - math.cos(angle)) > _VALUE_TOLERANCE
                    or abs(s - math.sin(angle)) > _VALUE_TOLERANCE
                ):
                    return False
                checked += 1
    return checked > 0
