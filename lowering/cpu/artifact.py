"""CPU artifacts: a module lowered to the LLVM dialect becomes a shared object plus a manifest.

The ExecutionEngine compiles the module to a position-independent object (with the packed
wrappers ``_mlir_<fn>`` of every function), the system C compiler links it into a shared
object, and the manifest records the programs described by ``describe_entry``. Files are
written to a temporary name and renamed, so an artifact folder never holds a half-written
file; the manifest is written last.

``jit_programs`` runs the same plans in process through the JIT, with no file written.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlir import ir
from mlir.execution_engine import ExecutionEngine

import tessera
from tessera.errors import LoweringError, ToolchainError
from tessera.runtime import cpu
from tessera.runtime.manifest import (
    MANIFEST_FILE,
    BinarySpec,
    HostCall,
    Manifest,
    ProgramSpec,
    TargetSpec,
)
from tessera.runtime.program import Program

from .host import Host, host

_PACKED_PREFIX = "_mlir_"


def _c_compiler() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        raise ToolchainError("no C compiler ('cc' or 'gcc') on PATH to link the shared object")
    return found


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _engine(lowered: ir.Module, **options: Any) -> ExecutionEngine:
    try:
        return ExecutionEngine(lowered, opt_level=3, **options)
    except RuntimeError as error:
        raise LoweringError(f"the ExecutionEngine cannot compile the module: {error}") from None


def _check_exports(path: Path, symbols: Sequence[str]) -> None:
    """Loads the shared object (so unresolvable references show now) and checks ``symbols``."""
    try:
        library = ctypes.CDLL(os.fspath(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
    except OSError as error:
        raise ToolchainError(f"the linked shared object does not load: {error}") from None
    missing = []
    for symbol in symbols:
        try:
            library[symbol]
        except AttributeError:
            missing.append(symbol)
    if missing:
        raise LoweringError(
            f"the shared object does not export {', '.join(missing)}; are the entry functions "
            "public and marked llvm.emit_c_interface (tessera-cpu-entry-abi)?"
        )


def compile_shared_object(lowered: ir.Module, exports: Sequence[str]) -> bytes:
    """The bytes of a shared object holding ``lowered`` (LLVM dialect); checks that it loads
    and exports ``exports``. A link failure raises ``ToolchainError`` with the command; its
    input files are kept so that the command reproduces it."""
    work = Path(tempfile.mkdtemp(prefix="tessera-cpu-"))
    keep = False
    try:
        obj, library = work / "model.o", work / "model.so"
        _engine(lowered, enable_pic=True).dump_to_object_file(os.fspath(obj))
        if not obj.is_file() or not obj.stat().st_size:
            raise ToolchainError(f"the ExecutionEngine wrote no object file to {obj}")
        # -z defs: an unresolved reference fails here, not when the runtime loads the library;
        # -static-libgcc: compiler helpers go inside, whatever libgcc the target machine has.
        command = [_c_compiler(), "-shared", "-static-libgcc", "-Wl,-z,defs"]
        command += ["-o", os.fspath(library), os.fspath(obj), "-lpthread", "-lm"]
        linked = subprocess.run(command, capture_output=True, text=True, check=False)
        if linked.returncode != 0:
            keep = True
            detail = (linked.stderr or linked.stdout).strip()
            raise ToolchainError(f"linking the shared object failed:\n{detail}", command)
        _check_exports(library, exports)
        return library.read_bytes()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def build_target(machine: Host | None = None) -> TargetSpec:
    """The artifact's target: ``machine``, the CPU the code was written and compiled for (by
    default this one, whose every feature the code may then use). The runtime refuses to load
    the artifact on a CPU that lacks one of the recorded features."""
    machine = machine or host()
    features = tuple(f[1:] for f in machine.features if f.startswith("+"))
    base = cpu.host_target()
    return TargetSpec(base.kind, base.arch, base.os, machine.cpu, features)


def _exports(programs: Sequence[ProgramSpec]) -> list[str]:
    """The packed symbols the steps call and the C interfaces behind them."""
    symbols: list[str] = []
    for program in programs:
        for step in program.steps:
            if isinstance(step, HostCall):
                symbols += [step.symbol, step.symbol.removeprefix(_PACKED_PREFIX)]
    return list(dict.fromkeys(symbols))


def build_artifact(
    lowered: ir.Module,
    programs: Sequence[ProgramSpec],
    directory: str | Path,
    *,
    binary: str = "model",
    metadata: Mapping[str, Any] | None = None,
    machine: Host | None = None,
) -> Manifest:
    """Writes the artifact for ``programs`` (whose steps call into ``binary``) to
    ``directory``: ``<binary>.so`` then ``manifest.json``. Returns the manifest. ``machine``
    is the CPU ``lowered`` was lowered for (``pipeline.lower``'s ``isa``; default the host)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = compile_shared_object(lowered, _exports(programs))
    file = f"{binary}.so"
    manifest = Manifest(
        compiler_version=tessera.__version__,
        target=build_target(machine),
        binaries=(BinarySpec(binary, file, cpu.BINARY_KIND, hashlib.sha256(data).hexdigest()),),
        programs=tuple(programs),
        metadata=dict(metadata or {}),
    )
    _write_atomic(directory / file, data)
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    _write_atomic(directory / MANIFEST_FILE, text.encode())
    return manifest


def jit_programs(lowered: ir.Module, programs: Sequence[ProgramSpec]) -> dict[str, Program]:
    """``programs`` ready to run in this process: ``lowered`` is JIT-compiled and the steps'
    symbols resolve in the JIT, through the same executor and calling convention as a loaded
    artifact."""
    engine = _engine(lowered)

    def resolve(symbol: str) -> int:
        # raw_lookup(n) finds `_mlir_<n>`, the packed wrapper, which is what steps name.
        if not symbol.startswith(_PACKED_PREFIX):
            raise LoweringError(f"'{symbol}' is not a packed wrapper (`{_PACKED_PREFIX}<fn>`)")
        address = engine.raw_lookup(symbol.removeprefix(_PACKED_PREFIX))
        if not address:
            raise LoweringError(f"the JIT-compiled module has no symbol '{symbol}'")
        return int(address)

    binaries = {step.binary for program in programs for step in program.steps}
    resolvers = dict.fromkeys(binaries, resolve)
    return {p.name: Program(p, resolvers, keepalive=engine) for p in programs}
