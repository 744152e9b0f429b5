"""Where a program's time goes: each kernel's share of a call, from the per-launch times a GPU
program measures (``CudaProgram.launch_times``: CUDA events between launches).

``kernel_profile`` groups the launches of one call by kernel (a decode step launches its GEMV,
norm and attention kernels once per layer), takes each launch's median over the repeated
calls, and sums per kernel, so a profile reads as "the LM head's GEMV is 18% of the step".
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


def format_profile(rows: Sequence[KernelTime]) -> str:
    """A table of ``rows``: share, milliseconds, launches, kernel."""
    lines = [f"{'share':>7} {'ms':>10} {'launches':>8}  kernel"]
    lines += [f"{row.share:>7.1%} {row.ms:>10.4f} {row.launches:>8}  {row.kernel}" for row in rows]
    lines.append(
        f"{'':>7} {sum(r.ms for r in rows):>10.4f} {sum(r.launches for r in rows):>8}  total"
    )
    return "\n".join(lines)
