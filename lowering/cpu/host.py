"""The CPU the kernels are generated for: its name, features and vector width.

MLIR's ExecutionEngine compiles for the host (LLVM's ``JITTargetMachineBuilder::detectHost``),
but an object written for ahead-of-time use carries no CPU of its own, and the kernels are
specialised to a vector width and instruction set anyway (AVX-512 registers, the
``vdpbf16ps`` bf16 dot product). So the lowering stamps every ``llvm.func`` with the chosen
CPU's ``target_cpu`` and ``target_features``: the host's by default, or a named
microarchitecture level (``ISAS``) for an artifact that must run on other CPUs. The code is
the same whichever way it is compiled, and the artifact records what it may use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Host:
    """What the kernel generators need to know about the CPU."""

    cpu: str
    features: tuple[str, ...]
    threads: int = 1  # cores a kernel may split its work across

    def has(self, feature: str) -> bool:
        return f"+{feature}" in self.features

    @property
    def vector_bits(self) -> int:
        if self.has("avx512f"):
            return 512
        if self.has("avx2") and self.has("fma"):
            return 256
        return 128

    @property
    def lanes(self) -> int:
        """f32 lanes in one vector register."""
        return self.vector_bits // 32

    @property
    def bf16_dot(self) -> bool:
        """Whether ``vdpbf16ps`` (bf16 pairs dot-accumulated into f32) is available."""
        return self.has("avx512bf16") and self.has("avx512f")

    def llvm_features(self) -> str:
        """The ``#llvm.target_features`` attribute text for ``llvm.func`` (the enabled
        features; the CPU name implies the rest)."""
        quoted = ", ".join(f'"{f}"' for f in self.features if f.startswith("+"))
        return f"#llvm.target_features<[{quoted}]>"


@cache
def host() -> Host:
    """The machine this process runs on, as LLVM sees it."""
    import llvmlite.binding as llvm

    features = tuple(sorted(str(llvm.get_host_cpu_features().flatten()).split(",")))
    return Host(
        cpu=str(llvm.get_host_cpu_name()),
        features=tuple(f for f in features if f),
        threads=len(os.sched_getaffinity(0)),
    )


# x86-64 microarchitecture levels (the psABI's), as the LLVM features each guarantees beyond
# the baseline's SSE2: what an artifact built for a level may use, and what the runtime then
# checks on the CPU that loads it.
_BASELINE = ("+cmov", "+cx8", "+fxsr", "+mmx", "+sse", "+sse2")
_V2 = (*_BASELINE, "+cx16", "+popcnt", "+sahf", "+sse3", "+sse4.1", "+sse4.2", "+ssse3")
_V3 = (*_V2, "+avx", "+avx2", "+bmi", "+bmi2", "+f16c", "+fma", "+lzcnt", "+movbe", "+xsave")
_V4 = (*_V3, "+avx512bw", "+avx512cd", "+avx512dq", "+avx512f", "+avx512vl")

# Instruction sets a lowering can be asked to target instead of the host's: for an artifact
# that must run on other CPUs than the one that built it, and for IR tests that must not
# depend on the machine. Each is an LLVM CPU name (a microarchitecture level, so LLVM itself
# adds nothing beyond it) and its features.
ISAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "avx512-bf16": ("x86-64-v4", (*_V4, "+avx512bf16")),
    "avx512": ("x86-64-v4", _V4),
    "avx2": ("x86-64-v3", _V3),
    "sse": ("x86-64", _BASELINE),
}


def target(isa: str = "host", threads: int = 0) -> Host:
    """The host, or a CPU with the named instruction set (``ISAS``); ``threads`` = 0 keeps
    the host's core count."""
    here = host()
    count = threads if threads > 0 else here.threads
    if isa == "host":
        return Host(here.cpu, here.features, count)
    if isa not in ISAS:
        known = ", ".join(["host", *ISAS])
        raise ValueError(f"unknown instruction set '{isa}' (known: {known})")
    cpu, features = ISAS[isa]
    return Host(cpu, tuple(sorted(features)), count)
