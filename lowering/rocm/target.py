"""The ROCm target: stages ``plan`` → ``gpu`` → ``rocdl`` → ``llvm`` → ``isa``, then an AMDGPU
code object and a manifest of kernel launches (the CUDA target's plan, for an AMD chip).

- ``plan`` and ``gpu``: the CUDA target's, with the kernels built for an AMD device
  (``device.py``): the same rules and generators, the AMD form where a piece differs.
- ``rocdl``: the ``tessera-lower-to-rocdl`` pipeline (``toolchain.py``).
- ``llvm``: LLVM IR; ``isa``: the AMDGPU assembly of every kernel.
``finish`` compiles and links ``kernels.hsaco``, checks it (``code_object.check_limits``) and
writes the manifest. Compiling needs no AMD GPU and no ROCm installation.
"""

from __future__ import annotations

import json
from typing import Any

from mlir import ir

import tessera
from tessera.errors import LoweringError
from tessera.ir_walk import walk_ops
from tessera.lowering.cuda import rules  # noqa: F401  (registers the rules)
from tessera.lowering.cuda.gpu_programs import build_programs, metadata, plan_stage, program_specs
from tessera.lowering.cuda.kernel import KernelModule
from tessera.lowering.cuda.plan import LaunchPlan
from tessera.lowering.cuda.target import _sha, _write
from tessera.runtime.manifest import MANIFEST_FILE, BinarySpec, Manifest, TargetSpec
from tessera.target import Build, Stage

from . import code_object, toolchain
from .chips import DEFAULT_CHIP, chip
from .device import Amd

KIND = "rocm"
BINARY_KIND = "hsaco"


class RocmTarget:
    kind = KIND

    def __init__(self, arch: str) -> None:
        self.chip = chip(arch)
        self.arch = arch

    @property
    def name(self) -> str:
        return f"rocm:{self.arch}"

    def fingerprint(self) -> dict[str, Any]:
        import llvmlite

        return {
            "arch": self.arch,
            "llvmlite": llvmlite.__version__,
            "ld.lld": toolchain.linker_version(),
        }

    def stages(self) -> tuple[Stage, ...]:
        return (
            Stage("plan", _plan),
            Stage("gpu", self._gpu),
            Stage("rocdl", self._rocdl),
            Stage("llvm", _llvm),
            Stage("isa", self._isa),
        )

    def _gpu(self, build: Build) -> str:
        with build.module.context, ir.Location.unknown():
            kernels = KernelModule(self.arch, device=Amd(self.arch))
            launches = build_programs(build, kernels)
            for launch_plan in launches.values():
                state_block_sizes(kernels, launch_plan)
        build.scratch["launches"] = launches
        build.scratch["kernels"] = kernels
        return str(kernels.module)

    def _rocdl(self, build: Build) -> str:
        return toolchain.to_rocdl(build.scratch["kernels"].module, self.arch)

    def _isa(self, build: Build) -> str:
        return toolchain.assembly(build.scratch["llvm_ir"], self.arch)

    def finish(self, build: Build) -> None:
        directory = build.directory
        obj = toolchain.compile_object(build.scratch["llvm_ir"], self.arch)
        hsaco = toolchain.link(obj)
        code = code_object.read(hsaco)
        code_object.check_limits(code, self.chip)
        launched = {
            step.kernel for plan in build.scratch["launches"].values() for step in plan.steps
        }
        missing = sorted(launched - {k.name for k in code.kernels})
        if missing:
            raise LoweringError(f"the code object lacks the launched kernels {', '.join(missing)}")
        _write(directory / "kernels.hsaco", hsaco)
        manifest = Manifest(
            compiler_version=tessera.__version__,
            target=TargetSpec(KIND, self.arch, "any"),
            binaries=(BinarySpec("kernels", "kernels.hsaco", BINARY_KIND, _sha(hsaco)),),
            programs=program_specs(build, build.scratch["launches"]),
            metadata={**build.metadata, **metadata(build), "code": BINARY_KIND},
        )
        text = json.dumps(manifest.to_json(), indent=2) + "\n"
        _write(directory / MANIFEST_FILE, text.encode())


def state_block_sizes(kernels: KernelModule, launch_plan: LaunchPlan) -> None:
    """Gives every kernel its launch's block size as ``known_block_size``: the AMDGPU backend
    then budgets registers for that many threads instead of the 1024 it must assume."""
    blocks = {info.name: info.block for info in launch_plan.infos.values()}
    for op in walk_ops(kernels.module.operation):
        if op.name != "gpu.func" or "known_block_size" in op.attributes:
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        if name in blocks:
            op.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get(list(blocks[name]))


def _plan(build: Build) -> str:
    """The CUDA target's plan stage, the generation functions included; no greedy decode step,
    whose fused LM head is built on the GEMV that AMD decode does not take (``device.py``)."""
    return plan_stage(build, generation=True, greedy_head=False)


def _llvm(build: Build) -> str:
    llvm_ir = toolchain.to_llvm_ir(build.scratch["kernels"].module)
    build.scratch["llvm_ir"] = llvm_ir
    return llvm_ir


def make_target(arch: str | None) -> RocmTarget:
    return RocmTarget(arch or DEFAULT_CHIP)
