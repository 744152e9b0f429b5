"""The CUDA target: stages ``plan`` → ``gpu`` → ``nvvm`` → ``ptx``, then a cubin and a
manifest of kernel launches.

- ``plan``: regions inlined; elementwise ops, transposes, broadcasts and fills made
  ``linalg.generic``s and fused into as few as possible; every value placed in memory
  (``tessera-plan-memory``).
- ``gpu``: every op lowered by its rule (``rules.py``) to a launch of a ``gpu.func`` kernel
  built with the bindings' builders; kernels shared by every op of the same signature.
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
from tessera.errors import LoweringError, PassError
from tessera.ir_walk import walk_ops
from tessera.passes.plan_memory import memory_plan
from tessera.passes.shape_exprs import Poly, shape_exprs
from tessera.pipeline import run_pipeline
from tessera.runtime.manifest import (
    MANIFEST_FILE,
    BinarySpec,
    Manifest,
    ProgramSpec,
    SymbolSpec,
    TargetSpec,
    TensorSpec,
)
from tessera.target import Build, Stage

from . import (
    rules,  # noqa: F401  (registers the rules)
    toolchain,
)
from .attention_layout import fold_attention_transposes
from .kernel import KernelModule
from .plan import LaunchPlan, build_launches

ARCHS = {"sm_80": "sm_80", "sm_90": "sm_90a", "sm_90a": "sm_90a"}
DEFAULT_ARCH = "sm_90a"

# Elementwise ops become generics and fuse; named linalg ops that only move data become
# generics too, so one kernel generator covers all of them.
PREPARE = (
    "builtin.module(func.func(convert-elementwise-to-linalg, linalg-generalize-named-ops),"
    "linalg-fuse-elementwise-ops, canonicalize, cse, tessera-dce, tessera-cse,"
    "resolve-shaped-type-result-dims, canonicalize, linalg-fuse-elementwise-ops, canonicalize,"
    "tessera-dce)"
)


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
        }

    def stages(self) -> tuple[Stage, ...]:
        return (
            Stage("plan", _plan),
            Stage("gpu", self._gpu),
            Stage("nvvm", _nvvm),
            Stage("ptx", _ptx),
        )

    def _gpu(self, build: Build) -> str:
        func = _forward(build.module)
        with build.module.context, ir.Location.unknown():
            kernels = KernelModule(self.arch)
            launch_plan = LaunchPlan(kernels, build.scratch["memory_plan"], shape_exprs(func))
            build_launches(func, launch_plan)
        build.scratch["launches"] = launch_plan
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
        program = _program(build, build.scratch["launches"])
        manifest = Manifest(
            compiler_version=tessera.__version__,
            target=TargetSpec("cuda", self.arch, "any"),
            binaries=tuple(binaries),
            programs=(program,),
            metadata={**build.metadata, "code": binary_kind},
        )
        text = json.dumps(manifest.to_json(), indent=2) + "\n"
        _write(directory / MANIFEST_FILE, text.encode())


def _forward(module: ir.Module) -> ir.Operation:
    for op in module.body.operations:
        if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == (
            "forward"
        ):
            return op.operation
    raise LoweringError("the module has no func.func @forward")


def _plan(build: Build) -> str:
    """Inline regions, fuse elementwise code into generics, plan memory."""
    from tessera.lowering.inline_regions import inline_region

    module = build.module
    for op in walk_ops(module.operation, pre_order=True):
        if op.name == "tessera.region":
            inline_region(op)
    try:
        run_pipeline(module, PREPARE, verify_each=False)
    except PassError as problem:
        raise LoweringError(problem.message, problem.location) from None
    fold_attention_transposes(module)
    func = _forward(module)
    with module.context:
        func.attributes["tessera.dims"] = ir.DictAttr.get(
            {"input_ids": ir.ArrayAttr.get([ir.StringAttr.get("B"), ir.StringAttr.get("S")])}
        )
    with module.context:
        try:
            run_pipeline(module, "builtin.module(tessera-plan-memory)", verify_each=False)
        except PassError as problem:
            raise LoweringError(problem.message, problem.location) from None
        build.scratch["memory_plan"] = memory_plan(func)
    return str(module)


def _nvvm(build: Build) -> str:
    return toolchain.to_nvvm(build.scratch["kernels"].module)


def _ptx(build: Build) -> str:
    ptx = toolchain.to_ptx(build.scratch["kernels"].module)
    build.scratch["ptx"] = ptx
    return ptx


def _program(build: Build, launch_plan: LaunchPlan) -> ProgramSpec:
    module = build.module
    func = _forward(module)
    vocab_rows = _vocab_rows(func)
    inputs = (TensorSpec("input_ids", "i64", ("B", "S"), (0, vocab_rows) if vocab_rows else None),)
    weights = []
    outputs = []
    arg_types = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    arg_attrs = ir.ArrayAttr(func.attributes["arg_attrs"])
    for index, type_ in enumerate(arg_types.inputs):
        attrs = ir.DictAttr(arg_attrs[index])
        if "tessera.weight" in attrs:
            shaped = ir.ShapedType(type_)
            weights.append(
                TensorSpec(
                    ir.StringAttr(attrs["tessera.weight"]).value,
                    str(shaped.element_type),
                    tuple(shaped.shape),
                )
            )
    plan = build.scratch["memory_plan"]
    for value in plan.values:
        if value.kind == "output":
            shape = tuple(_dim(d) for d in value.shape)
            outputs.append(TensorSpec(str(value.name), value.dtype, shape))
    arena = Poly.parse(plan.arena_bytes) + launch_plan.scratch
    options = build.options
    return ProgramSpec(
        "prefill",
        (
            SymbolSpec("B", 1, options.get("max_batch")),
            SymbolSpec("S", 1, options.get("max_seq_len")),
        ),
        inputs,
        tuple(weights),
        tuple(outputs),
        tuple(launch_plan.steps),
        tuple(launch_plan.buffers),
        str(arena),
    )


def _dim(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _vocab_rows(func: ir.Operation) -> int | None:
    """Rows of the table the token ids index (the runtime rejects ids outside it)."""
    for op in walk_ops(func):
        if op.name == "tessera.tensor.lookup":
            return int(ir.ShapedType(op.operands[0].type).shape[0])
    return None


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
