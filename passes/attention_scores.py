"""The elementwise middle of the attention pattern: q·kᵀ → × scale → [softcap] → [mask] →
the softmax input (optionally through ``arith.extf``).

The scale is the first arithmetic op after q·kᵀ, a multiplication or division by a splat.
The scores may still be [B·H, S, T] for the first ops (``baddbmm``'s scale, a softcap) and be
viewed as [B, H, S, T] within the chain: elementwise ops by splats commute with that view.
Whatever elementwise ops follow up to the mask are read as one function of the scaled scores
and recognised by its values as a softcap c·tanh(x/c), however it is spelled. The mask is an
``arith.addf`` of an additive mask or an ``arith.select`` between the scores and the lowest
value, classified by ``mask_eval``; with neither, attention is not causal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from mlir import ir

from .attention_operands import HEADS, BatchMatmul, batch_matmul_of, flat_batch_matmul_of
from .constant_values import splat_value, split_splat
from .mask_eval import (
    BLOCKED,
    NO_MASK,
    MaskKind,
    classify_additive_mask,
    classify_boolean_mask,
)
from .match import has_one_use, producer, producer_named, reassociation
from .scalar_eval import evaluate_unary, is_float_elementwise

# The longest elementwise chain read between q·kᵀ and the mask.
_MAX_CHAIN = 16
# The softcap function is compared with c·tanh(x/c) at these multiples of c.
_SOFTCAP_PROBES = (-10.0, -2.5, -1.0, -0.3, -1e-3, 0.0, 1e-3, 0.2, 0.7, 1.0, 3.0, 25.0)
_SOFTCAP_TOLERANCE = 1e-6
_CASTS = ("arith.extf", "arith.truncf")
# Ops a mask is read through on its way from the generic or constant that makes it.
_MASK_VIEWS = (
    "linalg.broadcast",
    "tensor.expand_shape",
    "tensor.collapse_shape",
    "tensor.extract_slice",
    "tensor.cast",
    "arith.extf",
    "arith.truncf",
)


@dataclass(frozen=True)
class Scores:
    """What lies between q·kᵀ and the softmax."""

    qk: BatchMatmul
    scale: float
    softcap: float | None
    mask: MaskKind
    ops: tuple[ir.Operation, ...]  # the elementwise ops, the mask op and the mask's producers


@dataclass(frozen=True)
class _Reading:
    """One way to read the softmax input: the scores side, and how to classify the mask."""

    scores: ir.Value
    classify: Callable[[], MaskKind | None]
    ops: tuple[ir.Operation, ...]


def match_scores(softmax_input: ir.Value) -> Scores | None:
    """Reads the chain that ends in ``softmax_input`` (the scores [B, H, S, T])."""
    ops: list[ir.Operation] = []
    current = softmax_input
    extf = producer_named(current, "arith.extf")
    if extf is not None:
        ops.append(extf)
        current = extf.operands[0]
        if not has_one_use(current):
            return None
    for reading in _readings(current):
        chain = _scaled(reading.scores)
        if chain is None:
            continue
        # Only now is the mask worth probing: the other side is known to be the scores.
        mask = reading.classify()
        if mask is None:
            return None
        qk, scale, softcap, chain_ops = chain
        return Scores(qk, scale, softcap, mask, (*ops, *reading.ops, *chain_ops))
    return None


def _readings(value: ir.Value) -> list[_Reading]:
    """The operands of an ``arith.addf`` either way round, the kept side of an
    ``arith.select`` against the lowest value, and ``value`` itself with no mask."""
    op = producer(value)
    readings: list[_Reading] = []
    if op is not None and op.name == "arith.addf":
        for scores, mask in ((op.operands[0], op.operands[1]), (op.operands[1], op.operands[0])):
            classify = partial(classify_additive_mask, mask)
            readings.append(_Reading(scores, classify, (op, *_mask_producers(mask))))
    elif op is not None and op.name == "arith.select":
        condition, kept, dropped = op.operands
        for scores, other, allowed_when in ((kept, dropped, True), (dropped, kept, False)):
            if _is_lowest(other):
                classify = partial(classify_boolean_mask, condition, allowed_when)
                readings.append(_Reading(scores, classify, (op, *_mask_producers(condition))))
    readings.append(_Reading(value, _no_mask, ()))
    return readings


def _no_mask() -> MaskKind:
    return NO_MASK


def _is_lowest(value: ir.Value) -> bool:
    found = splat_value(value)
    return found is not None and found <= BLOCKED


def _mask_producers(mask: ir.Value) -> list[ir.Operation]:
    """The views of a mask down to the op that makes it: erased with the match when dead."""
    found: list[ir.Operation] = []
    op = producer(mask)
    while op is not None and op.name in _MASK_VIEWS:
        found.append(op)
        op = producer(op.operands[0])
    if op is not None and op.name == "arith.constant":
        found.append(op)
    if op is not None and op.name == "linalg.generic":
        found.append(op)
        found += _captured_constants(op)
    return found


def _captured_constants(generic: ir.Operation) -> list[ir.Operation]:
    """Constants defined outside ``generic`` that its body uses (a window size, say)."""
    body = generic.regions[0].blocks[0]
    inside = [o.operation for o in body.operations]
    found: list[ir.Operation] = []
    for op in inside:
        for value in op.operands:
            source = producer_named(value, "arith.constant")
            if source is not None and not any(source == o for o in (*inside, *found)):
                found.append(source)
    return found


def _chain_operand(op: ir.Operation) -> ir.Value | None:
    """The one non-splat operand of an elementwise float op on the scores."""
    if not is_float_elementwise(op.name) or len(op.results) != 1:
        return None
    if len(op.operands) == 1:
        return op.operands[0]
    split = split_splat(op)
    return None if split is None else split[0]


def _heads_view(op: ir.Operation) -> bool:
    """The view of [B·H, S, T] scores as [B, H, S, T]."""
    return op.name == "tensor.expand_shape" and reassociation(op) == [list(g) for g in HEADS]


def _scaled(value: ir.Value) -> tuple[BatchMatmul, float, float | None, list[ir.Operation]] | None:
    """q·kᵀ behind ``value``, with the scale and softcap of the elementwise ops between."""
    chain: list[ir.Operation] = []  # from ``value`` back towards q·kᵀ
    current = value
    flat = False  # past the view of [B·H, S, T] scores as [B, H, S, T]
    for _ in range(_MAX_CHAIN):
        qk = flat_batch_matmul_of(current) if flat else batch_matmul_of(current)
        if qk is not None:
            break
        op = producer(current)
        if op is not None and not flat and _heads_view(op):
            chain.append(op)
            current, flat = op.operands[0], True
            continue
        operand = None if op is None else _chain_operand(op)
        if op is None or operand is None:
            return None
        chain.append(op)
        current = operand
    else:
        return None
    if not has_one_use(current) or not all(has_one_use(op.results[0]) for op in chain):
        return None
    # Casts and the view carry no arithmetic (bf16 scores are scaled in f32 between extf and
    # truncf).
    arithmetic = [op for op in reversed(chain) if op.name not in _CASTS and not _heads_view(op)]
    scale, start = 1.0, current
    if arithmetic:
        found = _scale_of(arithmetic[0])
        if found is not None:
            scale, start = found, arithmetic[0].results[0]
            arithmetic.pop(0)
    if not math.isfinite(scale) or scale <= 0:
        return None
    softcap = None
    if arithmetic:
        softcap = _softcap(value, start)
        if softcap is None:
            return None
    return qk, scale, softcap, chain


def _scale_of(op: ir.Operation) -> float | None:
    """s for ``x · s`` or ``s · x``, 1/s for ``x / s`` (s a splat)."""
    if op.name == "arith.mulf":
        split = split_splat(op)
        return None if split is None else float(split[1])
    if op.name == "arith.divf" and splat_value(op.operands[0]) is None:
        divisor = splat_value(op.operands[1])
        return None if not divisor else 1.0 / float(divisor)
    return None


def _softcap(end: ir.Value, start: ir.Value) -> float | None:
    """c when ``end`` = c·tanh(``start``/c) at every probe (c read far out, where tanh is 1)."""
    cap = evaluate_unary(end, start, 1e30)
    if cap is None or not math.isfinite(cap) or cap <= 0:
        return None
    for multiple in _SOFTCAP_PROBES:
        found = evaluate_unary(end, start, multiple * cap)
        if found is None or abs(found - cap * math.tanh(multiple)) > _SOFTCAP_TOLERANCE * cap:
            return None
    return cap
