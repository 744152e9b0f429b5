"""From a ``KernelModule`` to PTX (MLIR's NVPTX path) and from PTX to a cubin (``ptxas``).

``to_ptx`` lowers the module's ``gpu.module`` to NVVM and serializes it with
``gpu-module-to-binary{format=isa}``; the lowered NVVM text is returned too, for ``ir("nvvm")``.
``assemble`` runs ``ptxas`` from PATH or the CUDA toolkit (``CUDA_HOME``/``CUDA_PATH``, read
through ``tessera.knobs``); without one, an artifact ships PTX only and the driver compiles it.
A ptxas failure raises ``ToolchainError`` with the command that reproduces it, the PTX kept.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from mlir import ir

from tessera import knobs
from tessera.errors import LoweringError, PassError, ToolchainError

# gpu.module → NVVM/LLVM dialect. nvgpu first (it emits nvvm, vector and memref ops), then the
# generic conversions; convert-gpu-to-nvvm finishes with arith/math/memref/func to LLVM.
TO_NVVM = (
    "builtin.module(gpu.module("
    "convert-nvgpu-to-nvvm,"
    "convert-scf-to-cf,"
    "convert-vector-to-llvm,"
    "expand-strided-metadata,"
    "lower-affine,"
    "convert-gpu-to-nvvm,"
    "convert-nvvm-to-llvm,"
    "canonicalize,cse),"
    "reconcile-unrealized-casts)"
)
TO_PTX = "builtin.module(gpu-module-to-binary{format=isa})"


def _run(module: ir.Module, pipeline: str, what: str) -> None:
    from tessera.pipeline import run_pipeline

    try:
        run_pipeline(module, pipeline, verify_each=False)
    except PassError as problem:
        raise LoweringError(f"{what}: {problem.message}", problem.location) from None


def to_nvvm(module: ir.Module) -> str:
    """Lowers the kernels of ``module`` (in place) to the NVVM/LLVM dialects; returns the text."""
    _run(module, TO_NVVM, "lowering kernels to NVVM")
    return str(module)


def to_ptx(module: ir.Module) -> str:
    """Serializes an NVVM-level module (``to_nvvm``'s output) to PTX text."""
    _run(module, TO_PTX, "serializing kernels to PTX")
    for op in module.body.operations:
        if op.operation.name == "gpu.binary":
            objects = ir.ArrayAttr(op.attributes["objects"])
            return _assembly_text(str(objects[0]))
    raise LoweringError("gpu-module-to-binary produced no gpu.binary")


def _assembly_text(object_attr: str) -> str:
    """The ``assembly`` string of a printed ``#gpu.object``, unescaped."""
    match = re.search(r'assembly = "((?:[^"\\]|\\.)*)"', object_attr)
    if match is None:
        raise LoweringError("the serialized kernels hold no PTX assembly")
    return (
        re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), match.group(1))
        .replace('\\"', '"')
        .replace("\\\\", "\\")
    )


def find_ptxas() -> str | None:
    """ptxas from PATH, else from the CUDA toolkit named by CUDA_HOME or CUDA_PATH."""
    found = shutil.which("ptxas")
    if found:
        return found
    for root in knobs.cuda_homes():
        candidate = root / "bin" / "ptxas"
        if candidate.is_file():
            return str(candidate)
    return None


def ptxas_version(ptxas: str) -> str:
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "unknown"


def assemble(ptx: str, arch: str, *, keep_dir: Path | None = None) -> bytes:
    """Assembles ``ptx`` into a cubin for ``arch`` with ptxas; raises ``ToolchainError`` (PTX
    kept in ``keep_dir`` or a temporary folder, and the command that reproduces it)."""
    ptxas = find_ptxas()
    if ptxas is None:
        raise ToolchainError("ptxas not found (install the CUDA toolkit or put ptxas on PATH)")
    folder = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="tessera-ptxas-"))
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "kernels.ptx"
    output = folder / "kernels.cubin"
    source.write_text(ptx)
    command = [ptxas, f"-arch={arch}", "-O3", str(source), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"ptxas failed:\n{result.stderr.strip()}", command)
    data = output.read_bytes()
    if keep_dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return data


def resource_usage(ptx: str, arch: str) -> str:
    """ptxas's per-kernel report (registers, shared memory, spills), for tests and tuning."""
    ptxas = find_ptxas()
    if ptxas is None:
        raise ToolchainError("ptxas not found")
    with tempfile.TemporaryDirectory(prefix="tessera-ptxas-") as folder:
        source = Path(folder) / "kernels.ptx"
        source.write_text(ptx)
        command = [ptxas, f"-arch={arch}", "-O3", "-v", str(source), "-o", str(source) + ".o"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ToolchainError(f"ptxas failed:\n{result.stderr.strip()}", command)
        return result.stderr
