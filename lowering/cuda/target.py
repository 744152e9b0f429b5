"""The CUDA target: stages ``plan`` → ``gpu`` → ``nvvm`` → ``ptx``, then a cubin and a
manifest of kernel launches.

- ``plan``: the generation functions derived (``tessera-insert-kv-cache``: ``prefill_kv`` and
  ``decode`` programs over a paged KV cache) where the model allows; regions inlined;
  elementwise ops, transposes, broadcasts and fills made
  ``linalg.generic``s and fused into as few as possible; every value placed in memory
  (``tessera-plan-memory``).
- ``gpu``: every op lowered by its rule (``rules.py``) to a launch of a ``gpu.func`` kernel
  built with the bindings' builders; kernels shared by every op of the same signature. On
  sm_90 every kernel waits for the ones before it at its top, so each launch may start
  before the previous one ends (``grid_dependency.py``).
- ``nvvm``: the kernels in the NVVM/LLVM dialects. ``ptx``: MLIR's NVPTX output.
The cubin is assembled by ptxas; the PTX is kept in the artifact too, so a driver can compile
it where the cubin does not fit. Compiling needs no GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mlir import ir

import tessera
from tessera.errors import LoweringError
from tessera.runtime.manifest import MANIFEST_FILE, BinarySpec, Manifest, TargetSpec
from tessera.target import Build, Stage

from . import (
    rules,  # noqa: F401  (registers the rules)
    rules_kv,  # noqa: F401
    rules_sample,  # noqa: F401
    toolchain,
    tuning,
)
from .gpu_programs import build_programs, metadata, plan_stage, program_specs
from .grid_dependency import add_grid_dependency_control
from .kernel import KernelModule

ARCHS = {"sm_80": "sm_80", "sm_90": "sm_90", "sm_90a": "sm_90a"}
DEFAULT_ARCH = "sm_90a"


class CudaTarget:
    kind = "cuda"

    def __init__(self, arch: str) -> None:
        self.arch = arch

    @property
    def name(self) -> str:
        return f"cuda:{self.arch}"

    def fingerprint(self) -> dict[str, Any]:
        ptxas = toolchain.find_ptxas()
        return {
            "arch": self.arch,
            "ptxas": toolchain.ptxas_version(ptxas) if ptxas else "none",
            "tuning": tuning.load(self.arch).fingerprint(),
        }

    def stages(self) -> tuple[Stage, ...]:
        return (
            Stage("plan", _plan),
            Stage("gpu", self._gpu),
            Stage("nvvm", _nvvm),
            Stage("ptx", _ptx),
        )

    def _gpu(self, build: Build) -> str:
        with build.module.context, ir.Location.unknown():
            kernels = KernelModule(self.arch)
            build.scratch["launches"] = build_programs(build, kernels)
            if kernels.device.programmatic_launch:
                add_grid_dependency_control(kernels)
        build.scratch["kernels"] = kernels
        return str(kernels.module)

    def finish(self, build: Build) -> None:
        directory = build.directory
        ptx: str = build.scratch["ptx"]
        binaries = []
        ptx_bytes = ptx.encode()
        _write(directory / "kernels.ptx", ptx_bytes)
        binary_kind = "ptx"
        if toolchain.find_ptxas() is not None:
            cubin = toolchain.assemble(ptx, self.arch, keep_dir=None)
            _write(directory / "kernels.cubin", cubin)
            binaries.append(BinarySpec("kernels", "kernels.cubin", "cubin", _sha(cubin)))
            binaries.append(BinarySpec("kernels_ptx", "kernels.ptx", "ptx", _sha(ptx_bytes)))
            binary_kind = "cubin"
        else:
            binaries.append(BinarySpec("kernels", "kernels.ptx", "ptx", _sha(ptx_bytes)))
        manifest = Manifest(
            compiler_version=tessera.__version__,
            target=TargetSpec("cuda", self.arch, "any"),
            binaries=tuple(binaries),
            programs=program_specs(build, build.scratch["launches"]),
            metadata={**build.metadata, **metadata(build), "code": binary_kind},
        )
        text = json.dumps(manifest.to_json(), indent=2) + "\n"
        _write(directory / MANIFEST_FILE, text.encode())


def _plan(build: Build) -> str:
    """The generation functions derived, regions inlined, elementwise code fused, memory
    planned (``gpu_programs.plan_stage``); the greedy decode step's LM head is a GEMV that
    chooses the token."""
    return plan_stage(build, generation=True, greedy_head=True)


def _nvvm(build: Build) -> str:
    return toolchain.to_nvvm(build.scratch["kernels"].module)


def _ptx(build: Build) -> str:
    ptx = toolchain.to_ptx(build.scratch["kernels"].module)
    build.scratch["ptx"] = ptx
    return ptx


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def make_target(arch: str | None) -> CudaTarget:
    if arch is None:
        arch = _local_arch() or DEFAULT_ARCH
    if arch not in ARCHS:
        raise LoweringError(f"unknown CUDA arch '{arch}' (known: {', '.join(ARCHS)})")
    return CudaTarget(ARCHS[arch])


def _local_arch() -> str | None:
    """This machine's GPU as an arch (sm_90a on Hopper), when one is present."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) == (9, 0):
        return "sm_90a"
    return f"sm_{major}{minor}" if f"sm_{major}{minor}" in ARCHS else "sm_80"
