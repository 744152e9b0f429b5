"""The CPU backend: shared objects loaded with ctypes, symbols resolved to addresses.

A CPU artifact's binary is a shared object whose entry functions follow MLIR's packed C
interface (``runtime/program.py``). Loading checks first that the artifact was built for this
machine (architecture, OS, and the instruction-set features its code may use), since a foreign
shared object fails in ``dlopen`` with a message that names neither the artifact nor the cause,
and code using a missing instruction kills the process.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from .manifest import ArtifactError, BinarySpec, TargetSpec

KIND = "cpu"
BINARY_KIND = "shared-object"


def host_target() -> TargetSpec:
    """This machine as a target: what a CPU artifact built here records."""
    return TargetSpec(KIND, platform.machine(), sys.platform)


# LLVM's names of x86 instruction-set features → the flags Linux lists in /proc/cpuinfo. Code
# compiled for the build machine may use any feature it has; running it where one is missing
# dies of an illegal instruction, so the loader refuses such an artifact instead. Features not
# listed here are not checked (modes and hints such as 64bit or shstk, and instructions no
# compiler emits on its own).
_X86_FLAGS = {
    "cmov": "cmov",
    "cx8": "cx8",
    "fxsr": "fxsr",
    "mmx": "mmx",
    "sse": "sse",
    "sse2": "sse2",
    "cx16": "cx16",
    "sahf": "lahf_lm",
    "xsave": "xsave",
    "xsavec": "xsavec",
    "xsaveopt": "xsaveopt",
    "xsaves": "xsaves",
    "sse4a": "sse4a",
    "fma4": "fma4",
    "xop": "xop",
    "tbm": "tbm",
    "prfchw": "3dnowprefetch",
    "rdrnd": "rdrand",
    "rdseed": "rdseed",
    "clflushopt": "clflushopt",
    "clwb": "clwb",
    "clzero": "clzero",
    "fsgsbase": "fsgsbase",
    "rdpid": "rdpid",
    "invpcid": "invpcid",
    "sse3": "pni",
    "ssse3": "ssse3",
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "popcnt": "popcnt",
    "aes": "aes",
    "pclmul": "pclmulqdq",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "bmi": "bmi1",
    "bmi2": "bmi2",
    "lzcnt": "abm",
    "movbe": "movbe",
    "adx": "adx",
    "sha": "sha_ni",
    "gfni": "gfni",
    "vaes": "vaes",
    "vpclmulqdq": "vpclmulqdq",
    "avxvnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512cd": "avx512cd",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avx512vp2intersect": "avx512_vp2intersect",
    "amx-tile": "amx_tile",
    "amx-bf16": "amx_bf16",
    "amx-int8": "amx_int8",
}


@cache
def cpu_flags() -> frozenset[str] | None:
    """The instruction-set flags of this CPU as Linux reports them, or None where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def missing_features(features: Sequence[str], flags: frozenset[str] | None) -> list[str]:
    """The checkable ``features`` (LLVM names) that a CPU with ``flags`` lacks."""
    if flags is None:
        return []
    return [f for f in features if f in _X86_FLAGS and _X86_FLAGS[f] not in flags]


def check_target(target: TargetSpec) -> None:
    host = host_target()
    if (target.arch, target.os) != (host.arch, host.os):
        raise ArtifactError(
            f"the artifact was built for {target.arch}-{target.os}; this machine is "
            f"{host.arch}-{host.os}",
            "target",
        )
    missing = missing_features(target.features, cpu_flags())
    if missing:
        raise ArtifactError(
            f"the artifact's code was compiled for a {target.cpu or 'different'} CPU and may use "
            f"{', '.join(missing)}, which this CPU lacks (running it could die of an illegal "
            "instruction); rebuild the artifact on this machine, or for an instruction set "
            "this CPU has",
            "target.features",
        )


class SharedLibrary:
    """One loaded shared object of an artifact."""

    def __init__(self, spec: BinarySpec, path: Path, data: bytes) -> None:
        """Loads ``data``, the verified contents of ``path``, from a private copy: the dynamic
        loader hands back an already loaded library for a path it has seen, so a rebuilt
        artifact at the same path would otherwise run the old code."""
        if spec.kind != BINARY_KIND:
            raise ArtifactError(
                f"a cpu artifact's binaries are '{BINARY_KIND}', found '{spec.kind}'",
                f"binaries.{spec.name}.kind",
            )
        self.path = path
        with tempfile.TemporaryDirectory(prefix="tessera-load-") as folder:
            private = Path(folder) / path.name
            private.write_bytes(data)
            try:
                # RTLD_LOCAL keeps its symbols (every model has a `forward`) out of the global
                # scope. The mapping outlives the file, which goes with the folder.
                self._library = ctypes.CDLL(os.fspath(private), mode=os.RTLD_LOCAL | os.RTLD_NOW)
            except OSError as error:
                raise ArtifactError(f"cannot load: {error}", str(path)) from None

    def resolve(self, symbol: str) -> int:
        """The address of ``symbol``; an ``ArtifactError`` naming it and the file if absent."""
        try:
            function = self._library[symbol]
        except AttributeError:
            raise ArtifactError(f"does not export '{symbol}'", str(self.path)) from None
        address = ctypes.cast(function, ctypes.c_void_p).value
        if not address:
            raise ArtifactError(f"'{symbol}' has a null address", str(self.path))
        return address
