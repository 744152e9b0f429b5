"""Targets behind one interface: what ``tessera.compile`` needs to know about a backend.

A target names its stages in order; each stage is a function over a ``Build`` (the module, the
options, the artifact folder) that transforms it and returns the stage's text (IR, or PTX) for
``cm.ir(stage)``, the cache and ``TESSERA_DUMP_DIR``. One loop in ``compile()`` runs the stages
of every target; a target's ``finish`` writes the artifact.

Target names: ``cpu`` (this machine's CPU), ``cpu:<isa>`` (a portable instruction-set level such
as ``cpu:avx2``); ``cuda`` (the arch of this machine's GPU, else sm_90a), ``cuda:sm_80``,
``cuda:sm_90`` (Hopper without its arch-specific instructions: no wgmma), ``cuda:sm_90a``
(Hopper with them: the prefill projections run the wgmma + TMA GEMM); ``rocm`` (gfx942),
``rocm:gfx90a``, ``rocm:gfx942``, ``rocm:gfx1100`` (AMD GPUs, compiled without one); ``auto``
picks cuda when a CUDA device and ptxas are found, else cpu.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlir import ir

from .errors import TesseraError


@dataclass
class Build:
    """The state one compile threads through a target's stages."""

    module: ir.Module
    directory: Path
    options: Mapping[str, Any]
    metadata: Mapping[str, Any]
    # Whatever a target's stages hand to the next ones (kernels, the plan, binaries).
    scratch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Build], str]


class Target(Protocol):
    kind: str  # "cpu", "cuda", "rocm"
    arch: str  # "x86_64", "sm_80", "sm_90a", "gfx942"

    @property
    def name(self) -> str: ...

    def stages(self) -> tuple[Stage, ...]: ...

    def fingerprint(self) -> dict[str, Any]:
        """What besides the IR decides the code (arch, CPU features, toolchain versions)."""
        ...

    def finish(self, build: Build) -> None:
        """Writes the artifact (manifest and binaries) into ``build.directory``."""
        ...


_MODULES = {
    "cpu": "tessera.lowering.cpu.target",
    "cuda": "tessera.lowering.cuda.target",
    "rocm": "tessera.lowering.rocm.target",
}
NAMES = (
    "auto",
    "cpu",
    "cpu:<isa>",
    "cuda",
    "cuda:sm_80",
    "cuda:sm_90",
    "cuda:sm_90a",
    "rocm",
    "rocm:gfx90a",
    "rocm:gfx942",
    "rocm:gfx1100",
)


def resolve(name: str) -> Target:
    """The target called ``name`` (see the module docstring)."""
    if name == "auto":
        name = auto_choice()[0]
    kind, _, arch = name.partition(":")
    if kind not in _MODULES:
        raise TesseraError(f"unknown target '{name}' (targets: {', '.join(NAMES)})")
    if kind == "cpu" and arch:
        from tessera.lowering.cpu.host import ISAS

        if arch not in ISAS:
            raise TesseraError(
                f"unknown CPU instruction set '{arch}' in target '{name}' (known: "
                f"{', '.join(ISAS)})"
            )
    backend = importlib.import_module(_MODULES[kind])
    target: Target = backend.make_target(arch or None)
    return target


def auto_choice() -> tuple[str, str]:
    """(target name, why): cuda when a CUDA device and ptxas are found, else cpu."""
    import torch

    from tessera.lowering.cuda.toolchain import find_ptxas

    if not torch.cuda.is_available():
        return "cpu", "no CUDA device is present"
    if find_ptxas() is None:
        return "cpu", "a CUDA device is present but ptxas was not found"
    return "cuda", f"found {torch.cuda.get_device_name()} and ptxas"
