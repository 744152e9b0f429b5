"""Where a decode program asks L2 for weights ahead of time, and which bytes
(``kernels/l2_prefetch.py`` issues the requests).

A decode step is a chain of weight-streaming launches (the GEMVs) and latency-bound ones (the
attention prologue, paged attention, its combine, the norms). A **prefetch point** is a launch
that reads no large weight right after one that does, opening a stretch of at least
``MIN_STRETCH`` such launches: one in which little weight traffic is left to serve. There a
prefetch launch is inserted that asks L2 for the first bytes of the large weights the
following launches read, in the order they read them, up to a byte budget.

The budget models what L2 holds: bytes asked for and not yet read count against it until the
walk passes a launch that reads their weight (then they are spent, and the room is free for the
next point). A weight is asked for as prefixes, the same fraction of each weight a launch
reads: a decode GEMV's blocks take its output columns in order, and a gated GEMV's block reads
its gate and up rows together, so the first blocks to run read exactly those prefixes.

Only the decode programs take prefetches, and only with a budget from the tuning table
(``L2_PREFETCH_KEY``): without one the program is unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlir import ir

from tessera.errors import LoweringError
from tessera.runtime.manifest import ArgRef, KernelLaunch

from .kernels import attention_ir as a
from .kernels.l2_prefetch import (
    CHUNK_BYTES,
    GRANULE,
    L2PrefetchConfig,
    PrefetchRange,
    build_l2_prefetch,
)
from .plan import LaunchPlan

# The tuning entry that turns the prefetches on: {"budget_kib": what L2 may hold of them, in
# KiB; "chunk_kib": the bytes of one request, in KiB (optional)}.
L2_PREFETCH_KEY = "decode/l2_prefetch"
# A weight at least this large is streamed at bandwidth by the launch that reads it; smaller
# ones (norm weights) leave their launch latency-bound.
LARGE_WEIGHT_BYTES = 1 << 20
# The launches a stretch must hold to take a prefetch: a single norm between two GEMVs is over
# before its requests would be served, and would take L2 room from the attention's stretch.
MIN_STRETCH = 2


@dataclass(frozen=True)
class Weight:
    dtype: str
    bytes: int


def weights_of(plan: LaunchPlan) -> dict[str, Weight]:
    """The program's weights by name: element type and bytes (static shapes only)."""
    found: dict[str, Weight] = {}
    for value, ref in plan.refs.items():
        if ref.kind != "weight":
            continue
        shaped = ir.ShapedType(value.type)
        if not shaped.has_static_shape:
            continue
        bits = math.prod(shaped.shape) * a.bit_width(shaped.element_type)
        found.setdefault(ref.name, Weight(str(shaped.element_type), bits // 8))
    return found


def large_weights(step: KernelLaunch, weights: Mapping[str, Weight]) -> list[str]:
    """The large weights ``step`` reads, in argument order, each once."""
    names: list[str] = []
    for arg in step.args:
        if isinstance(arg, ArgRef) and arg.kind == "weight" and arg.name not in names:
            weight = weights.get(arg.name)
            if weight is not None and weight.bytes >= LARGE_WEIGHT_BYTES:
                names.append(arg.name)
    return names


def prefetch_plan(
    steps: list[KernelLaunch], weights: Mapping[str, Weight], budget: int
) -> dict[int, list[tuple[str, int, int]]]:
    """Prefetch point (a step index) → (weight, start byte, length) ranges, as the module's
    docstring describes."""
    reads = [large_weights(step, weights) for step in steps]
    asked: dict[str, int] = {}  # bytes of each weight's prefix asked for so far
    pending: dict[str, int] = {}  # of those, bytes no step before the walk's point has read
    plan: dict[int, list[tuple[str, int, int]]] = {}
    for index, step_reads in enumerate(reads):
        stretch = reads[index : index + MIN_STRETCH]
        if index > 0 and reads[index - 1] and len(stretch) == MIN_STRETCH and not any(stretch):
            room = budget - sum(pending.values())
            ranges = _ranges_ahead(reads[index + 1 :], weights, asked, room)
            for name, start, length in ranges:
                asked[name] = start + length
                pending[name] = pending.get(name, 0) + length
            if ranges:
                plan[index] = ranges
        for name in step_reads:
            # Read: its prefetched bytes are spent, and a later reader (the LM head reading
            # the embedding the lookup read a row of) starts from the first byte again.
            pending.pop(name, None)
            asked.pop(name, None)
    return plan


def _ranges_ahead(
    ahead: list[list[str]], weights: Mapping[str, Weight], asked: Mapping[str, int], room: int
) -> list[tuple[str, int, int]]:
    """Prefixes of the weights the steps ``ahead`` read, in their order, within ``room``
    bytes; the weights of one step take the same fraction of what each has left."""
    ranges: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for names in ahead:
        if room < GRANULE:
            break
        left = {n: weights[n].bytes - asked.get(n, 0) for n in names if n not in seen}
        seen.update(names)
        left = {n: b for n, b in left.items() if b > 0}
        total = sum(left.values())
        if not total:
            continue
        fraction = min(1.0, room / total)
        for name, remaining in left.items():
            length = remaining
            if fraction < 1.0:
                length = int(remaining * fraction) // GRANULE * GRANULE
            if length <= 0:
                continue
            ranges.append((name, asked.get(name, 0), length))
            room -= length
    return ranges


def add_weight_prefetches(plan: LaunchPlan) -> None:
    """Inserts the prefetch launches into ``plan`` (a decode program on a device with L2 bulk
    prefetch) where its tuning entry gives a budget."""
    entry = plan.tuning.get(L2_PREFETCH_KEY)
    if entry is None or plan.rows_hint is None or not plan.kernels.device.l2_bulk_prefetch:
        return
    if "budget_kib" not in entry:
        sources = ", ".join(plan.tuning.sources)
        raise LoweringError(f"tuning entry {L2_PREFETCH_KEY} ({sources}): no budget_kib")
    budget = int(entry["budget_kib"]) << 10
    chunk = int(entry.get("chunk_kib", 0)) << 10
    weights = weights_of(plan)
    points = prefetch_plan(plan.steps, weights, budget)
    steps: list[KernelLaunch] = []
    for index, step in enumerate(plan.steps):
        ranges = points.get(index)
        if ranges:
            cfg = L2PrefetchConfig(
                tuple(PrefetchRange(weights[n].dtype, s, length) for n, s, length in ranges),
                chunk or CHUNK_BYTES,
            )
            info = plan.kernel(f"l2 prefetch {cfg}", functools.partial(build_l2_prefetch, cfg=cfg))
            bindings = {f"w{i}": ArgRef("weight", name) for i, (name, _, _) in enumerate(ranges)}
            steps.append(plan.step(info, bindings))
        steps.append(step)
    plan.steps[:] = steps
