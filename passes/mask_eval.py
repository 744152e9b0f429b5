"""Classifying an attention mask by its values: causal, a causal window, or no mask at all.

A mask is read element by element (``tensor_eval.ElementEvaluator``) through broadcasts,
reshapes and slices down to the no-input ``linalg.generic`` (or dense constant) that makes it,
so any way of writing "key ≤ query and query − key < w" is recognised. The window is found by
an exponential then a binary search far from the origin (where a short window cannot hide
behind the start of the sequence), and the guess is then checked on sampled points: near the
diagonal, near the window edge, near the origin and the far ends, for several batch and head
indices (a mask that depends on them is not a causal mask).

Flash attention aligns query i with key i + T − S; a mask of static shape [S, T] is compared
with that alignment, a dynamic one (prefill, T = S) with key ≤ query.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import shaped_dims

from .scalar_eval import NotEvaluable
from .tensor_eval import ElementEvaluator, OutOfBounds

# Dynamic dims are probed up to here: far past any window, still exact in every int type.
FAR = 1 << 20
# An additive mask blocks with the dtype's lowest value or -inf; anything at most this is taken
# for a block (bf16 and f32 lowest are about -3.4e38, f16's -65504 is not used by Gemma).
BLOCKED = -1.0e30
_BATCH_HEAD_PROBES = ((0, 0), (1, 1), (2, 0), (0, 3), (7, 5))
_RANDOM_PROBES = 96


@dataclass(frozen=True)
class MaskKind:
    """What a mask lets through: everything (not causal), keys up to the aligned query
    position (causal), and of those only the last ``window`` (causal window)."""

    causal: bool
    window: int | None = None

    def allows(self, query: int, key: int, offset: int) -> bool:
        if not self.causal:
            return True
        position = query + offset
        return key <= position and (self.window is None or position - key < self.window)


NO_MASK = MaskKind(causal=False)


class _Unclassifiable(Exception):
    """An element is neither clearly allowed nor clearly blocked."""


def classify_additive_mask(mask: ir.Value) -> MaskKind | None:
    """``mask`` [B, H, S, T] added to the scores: 0 allows, ≤ -1e30 (or -inf) blocks."""

    def decode(element: float | int | bool) -> bool:
        if element == 0:
            return True
        if element <= BLOCKED:
            return False
        raise _Unclassifiable(f"additive mask element {element}")

    return _classify(mask, decode)


def classify_boolean_mask(mask: ir.Value, allowed_when: bool = True) -> MaskKind | None:
    """``mask`` [B, H, S, T] of i1 choosing between the scores and the lowest value;
    ``allowed_when`` is the element value that keeps the score."""
    return _classify(mask, lambda element: bool(element) == allowed_when)


def _classify(mask: ir.Value, decode: Callable[[float | int | bool], bool]) -> MaskKind | None:
    if len(shaped_dims(mask)) != 4:
        return None
    try:
        return _Probe(mask, decode).classify()
    except (NotEvaluable, _Unclassifiable, ArithmeticError, ValueError, IndexError):
        return None


class _Probe:
    """Reads ``allowed(b, h, query, key)`` of one mask and classifies it."""

    def __init__(self, mask: ir.Value, decode: Callable[[float | int | bool], bool]) -> None:
        self.mask = mask
        self.decode = decode
        self.evaluator = ElementEvaluator()

    def inside(self, index: tuple[int, int, int, int]) -> bool:
        try:
            self.evaluator.at(self.mask, index)
        except OutOfBounds:
            return False
        return True

    def allowed(self, b: int, h: int, query: int, key: int) -> bool | None:
        """None when the index lies outside a static dim of the mask or its sources."""
        try:
            element = self.evaluator.at(self.mask, (b, h, query, key))
        except OutOfBounds:
            return None
        return self.decode(element)

    def extent(self, axis: int) -> int | None:
        """How many indices along ``axis`` are readable (FAR for a dynamic dim)."""

        def readable(count: int) -> bool:
            index = [0, 0, 0, 0]
            index[axis] = count - 1
            return self.inside((index[0], index[1], index[2], index[3]))

        if not readable(1):
            return None
        if readable(FAR):
            return FAR
        low, high = 1, FAR  # readable(low), not readable(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if readable(middle) else (low, middle)
        return low

    def classify(self) -> MaskKind | None:
        extents = [self.extent(axis) for axis in range(4)]
        known = [e for e in extents if e is not None]
        if len(known) != len(extents):
            return None
        batches, heads, queries, keys = known
        if (queries == FAR) != (keys == FAR):
            return None  # one side static, the other not: the alignment is unknown
        offset = keys - queries
        last = queries - 1
        if not 0 <= last + offset < keys or not self.allowed(0, 0, last, last + offset):
            return None
        kind = self._guess(last, offset, keys)
        if kind is None:
            return None
        return kind if self._verify(kind, offset, batches, heads, queries, keys) else None

    def _guess(self, last: int, offset: int, keys: int) -> MaskKind | None:
        """Causal or not from the key just after the diagonal, then the window from the
        farthest query row."""
        row = last - 1 if last >= 1 else last
        if row + offset + 1 < keys and self.allowed(0, 0, row, row + offset + 1):
            return NO_MASK
        position = last + offset
        allowed_distance, distance = 0, 1
        while distance <= position:
            if not self.allowed(0, 0, last, position - distance):
                break
            allowed_distance, distance = distance, distance * 2
        else:
            if position == allowed_distance or self.allowed(0, 0, last, 0):
                return MaskKind(causal=True)
            distance = position
        while distance - allowed_distance > 1:  # allowed at allowed_distance, not at distance
            middle = (allowed_distance + distance) // 2
            if self.allowed(0, 0, last, position - middle):
                allowed_distance = middle
            else:
                distance = middle
        return MaskKind(causal=True, window=distance)

    def _verify(
        self, kind: MaskKind, offset: int, batches: int, heads: int, queries: int, keys: int
    ) -> bool:
        rows = {0, 1, 2, 3, 5, 8, queries // 3, queries // 2, 1000, 4103, 65537}
        rows |= {queries - 1, queries - 2, queries - 3}
        if kind.window is not None:
            w = kind.window
            rows |= {w - 2, w - 1, w, w + 1, 2 * w + 3}
        probes: list[tuple[int, int, int, int]] = []
        for b, h in _BATCH_HEAD_PROBES:
            for row in sorted(r for r in rows if 0 <= r < queries):
                position = row + offset
                columns = {position + d for d in range(-3, 4)} | {0, 1, 2, keys - 1, position // 2}
                if kind.window is not None:
                    columns |= {position - kind.window + d for d in range(-2, 3)}
                probes += [(b, h, row, key) for key in sorted(columns) if 0 <= key < keys]
        generator = random.Random(0)
        for _ in range(_RANDOM_PROBES):
            row = generator.randrange(queries)
            b, h = generator.randrange(min(batches, 8)), generator.randrange(min(heads, 8))
            # Mostly near and behind the diagonal, where causal masks differ from each other.
            key = generator.randrange(max(1, min(keys, row + offset + 64)))
            probes.append((b, h, row, key))
        for b, h, row, key in probes:
            found = self.allowed(b, h, row, key)
            if found is not None and found != kind.allows(row, key, offset):
                return False
        return True
