"""The CPU the kernels are generated for: its name, features and vector width.

MLIR's ExecutionEngine compiles for the host (LLVM's ``JITTargetMachineBuilder::detectHost``),
but an object written for ahead-of-time use carries no CPU of its own, and the kernels are
specialised to the host's vector width and instructions anyway (AVX-512 registers, the
``vdpbf16ps`` bf16 dot product). So the lowering stamps every ``llvm.func`` with the host's
``target_cpu`` and ``target_features``: the code is the same whichever way it is compiled.
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


# Instruction sets a lowering can be asked to target instead of the host's (for IR tests that
# must not depend on the machine): the features the kernel generators look at.
ISAS: dict[str, tuple[str, ...]] = {
    "avx512-bf16": ("+avx2", "+fma", "+avx512f", "+avx512bf16"),
    "avx512": ("+avx2", "+fma", "+avx512f"),
    "avx2": ("+avx2", "+fma"),
    "sse": (),
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
    return Host(f"generic-{isa}", ISAS[isa], count)
