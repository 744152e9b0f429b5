"""From a ``KernelModule`` for an AMD chip to an AMDGPU code object, without an AMD GPU and
without the ROCm toolkit.

1. ``to_rocdl``: the ``tessera-lower-to-rocdl{chip=...}`` pipeline (registered here): math
   expanded without device libraries (``expand_math.py``), then MLIR's conversions to the
   ROCDL and LLVM dialects.
2. ``to_llvm_ir``: the ``gpu.module``'s body as LLVM IR through the bindings' translation
   (``translate_module_to_llvmir``), with the AMDGPU data layout, the ``amdgcn-amd-amdhsa``
   triple and code object version 5. A kernel that still calls a function nobody defines
   (an ocml function of the ROCm device libraries, which are not linked) is refused here.
3. ``compile_object`` / ``assembly``: llvmlite's AMDGPU backend for the chip.
4. ``link``: ``ld.lld -shared`` makes the relocatable object a loadable code object (hsaco):
   from PATH, else the LLVM linker inside the ``ziglang`` package (``zig ld.lld``), which the
   compiler extra installs. A failure is a ``ToolchainError`` with the command to reproduce it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlir import ir
from mlir.dialects import llvm as llvm_dialect

from tessera.errors import LoweringError, PassError, ToolchainError
from tessera.pass_registry import register_pipeline

from .chips import chip as chip_named

TRIPLE = "amdgcn-amd-amdhsa"
# Code object version 5 (ROCm 5.x and later load it); LLVM's default is newer.
CODE_OBJECT_VERSION = 500


@dataclass(frozen=True)
class RocdlOptions:
    """chip: the AMD GPU (gfx90a, gfx942, gfx1100)."""

    chip: str = "gfx942"


register_pipeline(
    "tessera-lower-to-rocdl",
    [
        "tessera-rocm-expand-math",
        "gpu.module(convert-scf-to-cf,convert-amdgpu-to-rocdl{chipset=$chip},expand-strided-metadata,"
        "lower-affine,"
        "convert-gpu-to-rocdl{chipset=$chip index-bitwidth=64 runtime=HIP},canonicalize,cse)",
        "reconcile-unrealized-casts",
    ],
    "Lower the gpu.module kernels for an AMD chip (chip=gfx90a|gfx942|gfx1100) to the ROCDL "
    "and LLVM dialects, with math expanded without the ROCm device libraries.",
    RocdlOptions,
)


def _run(module: ir.Module, pipeline: str, what: str) -> None:
    from tessera.pipeline import run_pipeline

    try:
        run_pipeline(module, pipeline, verify_each=False)
    except PassError as problem:
        raise LoweringError(f"{what}: {problem.message}", problem.location) from None


def to_rocdl(module: ir.Module, chip: str) -> str:
    """Lowers the kernels of ``module`` (in place) to the ROCDL/LLVM dialects; returns the text."""
    chip_named(chip)
    _run(
        module,
        f"builtin.module(tessera-lower-to-rocdl{{chip={chip}}})",
        "lowering kernels to ROCDL",
    )
    return str(module)


def _gpu_module(module: ir.Module) -> ir.Operation:
    for op in module.body.operations:
        if op.operation.name == "gpu.module":
            return op.operation
    raise LoweringError("the module holds no gpu.module")


def undefined_calls(gpu_module: ir.Operation) -> list[str]:
    """Functions the lowered kernels declare but nobody defines (LLVM intrinsics aside)."""
    names = []
    for view in gpu_module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name != "llvm.func" or op.regions[0].blocks:
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        if not name.startswith("llvm."):
            names.append(name)
    return names


def to_llvm_ir(module: ir.Module) -> str:
    """The LLVM IR of the (ROCDL-level) ``module``'s kernels."""
    gpu_module = _gpu_module(module)
    missing = undefined_calls(gpu_module)
    if missing:
        raise LoweringError(
            f"the kernels call {', '.join(missing)}, which only the ROCm device libraries "
            "(ocml) define, and they are not linked; expand the op in "
            "lowering/rocm/expand_math.py"
        )
    layout = gpu_module.attributes["llvm.data_layout"]
    body = "\n".join(str(op) for op in gpu_module.regions[0].blocks[0].operations)
    text = (
        f'module attributes {{llvm.data_layout = {layout}, llvm.target_triple = "{TRIPLE}"}} {{\n'
        f'llvm.module_flags [#llvm.mlir.module_flag<error, "amdhsa_code_object_version", '
        f"{CODE_OBJECT_VERSION} : i32>]\n{body}\n}}"
    )
    with module.context:
        standalone = ir.Module.parse(text)
        # The bindings' stubs do not list the translation the LLVM dialect module provides.
        translate = llvm_dialect.translate_module_to_llvmir  # type: ignore[attr-defined]
        return str(translate(standalone.operation))


def _target_machine(chip: str):  # type: ignore[no-untyped-def]
    import llvmlite.binding as llvm

    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    target = llvm.Target.from_triple(TRIPLE)
    return target.create_target_machine(cpu=chip, features="", opt=3, reloc="pic")


def _parse(llvm_ir: str):  # type: ignore[no-untyped-def]
    import llvmlite.binding as llvm

    try:
        module = llvm.parse_assembly(llvm_ir)
        module.verify()
    except RuntimeError as error:
        raise LoweringError(f"the kernels' LLVM IR does not verify: {error}") from None
    return module


def compile_object(llvm_ir: str, chip: str) -> bytes:
    """The relocatable AMDGPU object of ``llvm_ir`` for ``chip`` (llvmlite's backend)."""
    data: bytes = _target_machine(chip).emit_object(_parse(llvm_ir))
    return data


def assembly(llvm_ir: str, chip: str) -> str:
    """The AMDGPU assembly of ``llvm_ir`` for ``chip`` (kernel descriptors and metadata too)."""
    text: str = _target_machine(chip).emit_assembly(_parse(llvm_ir))
    return text


def find_linker() -> list[str] | None:
    """The command that runs ld.lld: from PATH, else the ``ziglang`` package's ``zig ld.lld``."""
    found = shutil.which("ld.lld")
    if found:
        return [found]
    spec = importlib.util.find_spec("ziglang")
    if spec is not None and spec.origin is not None:
        zig = Path(spec.origin).parent / "zig"
        if zig.is_file():
            return [str(zig), "ld.lld"]
    return None


def linker_version() -> str:
    command = find_linker()
    if command is None:
        return "none"
    out = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def link(obj: bytes, *, keep_dir: Path | None = None) -> bytes:
    """Links a relocatable AMDGPU object into a code object (``ld.lld -shared``)."""
    command = find_linker()
    if command is None:
        raise ToolchainError(
            "ld.lld not found: install the compiler extra (pip install 'tessera[compiler]', "
            "which brings the ziglang package's LLVM linker) or put ld.lld on PATH"
        )
    folder = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="tessera-lld-"))
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "kernels.o"
    output = folder / "kernels.hsaco"
    source.write_bytes(obj)
    full = [*command, "-shared", "--no-undefined", str(source), "-o", str(output)]
    result = subprocess.run(full, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"ld.lld failed:\n{result.stderr.strip()}", full)
    data = output.read_bytes()
    if keep_dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return data
