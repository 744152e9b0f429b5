"""Where a program's time goes: each kernel's share of a call, from the per-launch times a GPU
program measures (``CudaProgram.launch_times``: CUDA events between launches).

``kernel_profile`` groups the launches of one call by kernel (a decode step launches its GEMV,
norm and attention kernels once per layer), takes each launch's median over the repeated
calls, and sums per kernel, so a profile reads as "the LM head's GEMV is 18% of the step".

``timeline_profile`` reads the GPU's own record of a call instead (each kernel's start and end,
from the profiler's device trace of a graph replay): no events sit between the launches, so it
shows what each kernel costs in the running step and how long the GPU sat idle between them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from tessera.errors import RuntimeInputError


@dataclass(frozen=True)
class KernelTime:
    """One kernel's part of a call: how many launches, their summed median milliseconds, and
    the fraction of the call's total."""

    kernel: str
    launches: int
    ms: float
    share: float

    def to_json(self) -> dict[str, object]:
        return {
            "kernel": self.kernel,
            "launches": self.launches,
            "ms": round(self.ms, 5),
            "share": round(self.share, 4),
        }


def kernel_profile(kernels: Sequence[str], calls: Sequence[Sequence[float]]) -> list[KernelTime]:
    """The kernels of ``kernels`` (one name per launch, in order) by their summed median time
    over ``calls`` (per call, each launch's milliseconds), largest first; ties by name."""
    if not calls:
        raise RuntimeInputError("a profile needs at least one call")
    for number, call in enumerate(calls):
        if len(call) != len(kernels):
            raise RuntimeInputError(
                f"call {number} timed {len(call)} launches; the program has {len(kernels)}"
            )
    medians = [statistics.median(call[i] for call in calls) for i in range(len(kernels))]
    total = sum(medians)
    grouped: dict[str, list[float]] = {}
    for kernel, ms in zip(kernels, medians, strict=True):
        grouped.setdefault(kernel, []).append(ms)
    rows = [
        KernelTime(kernel, len(times), sum(times), sum(times) / total if total > 0 else 0.0)
        for kernel, times in grouped.items()
    ]
    return sorted(rows, key=lambda row: (-row.ms, row.kernel))


@dataclass(frozen=True)
class Timeline:
    """A call as the GPU ran it: each kernel's exclusive time (``rows``), the call's wall time
    (first start to last end) and its idle time (no kernel of the call running); medians over
    the calls."""

    rows: list[KernelTime]
    wall_ms: float
    idle_ms: float

    def to_json(self) -> dict[str, object]:
        return {
            "wall_ms": round(self.wall_ms, 5),
            "idle_ms": round(self.idle_ms, 5),
            "kernels": [row.to_json() for row in self.rows],
        }


def timeline_profile(spans: Sequence[tuple[str, float, float]], launches: int) -> Timeline:
    """The ``Timeline`` of back-to-back calls of ``launches`` kernels each, from ``spans``
    (kernel name, start and end in microseconds, any order).

    A kernel's exclusive time runs from the later of its start and the end of every kernel
    before it, to its end: where a launch starts early (programmatic dependent launch) and
    waits for its predecessor, only the time after the predecessor ends is its own, so the
    exclusive times and the idle gaps add up to the wall time."""
    if launches < 1 or not spans or len(spans) % launches:
        raise RuntimeInputError(
            f"a timeline needs whole calls of {launches} launches; got {len(spans)} kernel spans"
        )
    ordered = sorted(spans, key=lambda span: span[1])
    names = [name for name, _, _ in ordered[:launches]]
    calls, walls, idles = [], [], []
    for first in range(0, len(ordered), launches):
        call = ordered[first : first + launches]
        if [name for name, _, _ in call] != names:
            raise RuntimeInputError(
                f"call {first // launches} launched other kernels than the first call"
            )
        frontier, idle, exclusive = call[0][1], 0.0, []
        for _, start, end in call:
            idle += max(0.0, start - frontier)
            exclusive.append(max(0.0, end - max(start, frontier)) / 1000.0)
            frontier = max(frontier, end)
        calls.append(exclusive)
        walls.append((frontier - call[0][1]) / 1000.0)
        idles.append(idle / 1000.0)
    return Timeline(
        kernel_profile(names, calls), statistics.median(walls), statistics.median(idles)
    )


def format_profile(rows: Sequence[KernelTime]) -> str:
    """A table of ``rows``: share, milliseconds, launches, kernel."""
    lines = [f"{'share':>7} {'ms':>10} {'launches':>8}  kernel"]
    lines += [f"{row.share:>7.1%} {row.ms:>10.4f} {row.launches:>8}  {row.kernel}" for row in rows]
    lines.append(
        f"{'':>7} {sum(r.ms for r in rows):>10.4f} {sum(r.launches for r in rows):>8}  total"
    )
    return "\n".join(lines)
