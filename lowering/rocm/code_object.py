"""Reading an AMDGPU code object (hsaco): what a HIP runtime needs to find in it, read without
one.

A code object is an ELF64 shared object with ``e_machine`` EM_AMDGPU (224). Every kernel has a
64-byte kernel descriptor, the dynamic symbol ``<kernel>.kd`` that ``hipModuleGetFunction``
resolves, and an entry in the ``amdhsa.kernels`` list of the metadata note
(``NT_AMDGPU_METADATA``, a MessagePack map in a note named ``AMDGPU``), which records its
arguments and resources: ``.vgpr_count``, ``.sgpr_count``, ``.group_segment_fixed_size``
(static LDS), ``.private_segment_fixed_size`` (scratch per lane), spill counts and
``.wavefront_size``. ``check_limits`` holds those against the chip's limits (``chips.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from tessera.errors import LoweringError

from .chips import Chip
from .msgpack import unpack

EM_AMDGPU = 224
NT_AMDGPU_METADATA = 32
_SHT_NOTE = 7
_SHT_DYNSYM = 11


@dataclass(frozen=True)
class KernelResources:
    """One kernel's entry of the metadata note."""

    name: str
    symbol: str
    vgprs: int
    sgprs: int
    agprs: int
    lds_bytes: int
    scratch_bytes: int
    vgpr_spills: int
    sgpr_spills: int
    wavefront: int
    max_workgroup: int


@dataclass(frozen=True)
class CodeObject:
    machine: int
    target: str  # amdhsa.target, e.g. amdgcn-amd-amdhsa--gfx942
    dynamic_symbols: tuple[str, ...]
    kernels: tuple[KernelResources, ...]
    metadata: dict[str, Any]

    def kernel(self, name: str) -> KernelResources:
        for kernel in self.kernels:
            if kernel.name == name:
                return kernel
        raise LoweringError(f"the code object has no kernel '{name}'")


def _sections(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, offset, size, link) of every section."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    entsize, count = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(count):
        base = shoff + i * entsize
        _name, kind = struct.unpack_from("<II", data, base)
        offset, size, link = struct.unpack_from("<QQI", data, base + 0x18)
        out.append((kind, offset, size, link))
    return out


def _notes(data: bytes, offset: int, size: int) -> list[tuple[str, int, bytes]]:
    out = []
    at, end = offset, offset + size
    while at + 12 <= end:
        namesz, descsz, kind = struct.unpack_from("<III", data, at)
        at += 12
        name = data[at : at + namesz].rstrip(b"\0").decode()
        at += -(-namesz // 4) * 4
        out.append((name, kind, data[at : at + descsz]))
        at += -(-descsz // 4) * 4
    return out


def _dynamic_symbols(data: bytes, sections: list[tuple[int, int, int, int]]) -> list[str]:
    names = []
    for kind, offset, size, link in sections:
        if kind != _SHT_DYNSYM:
            continue
        _, strings_at, strings_size, _ = sections[link]
        strings = data[strings_at : strings_at + strings_size]
        for base in range(offset, offset + size, 24):
            name_at = struct.unpack_from("<I", data, base)[0]
            if name_at:
                names.append(strings[name_at : strings.index(b"\0", name_at)].decode())
    return names


def _resources(entry: dict[str, Any]) -> KernelResources:
    return KernelResources(
        name=entry[".name"],
        symbol=entry[".symbol"],
        vgprs=int(entry[".vgpr_count"]),
        sgprs=int(entry[".sgpr_count"]),
        agprs=int(entry.get(".agpr_count", 0)),
        lds_bytes=int(entry[".group_segment_fixed_size"]),
        scratch_bytes=int(entry[".private_segment_fixed_size"]),
        vgpr_spills=int(entry.get(".vgpr_spill_count", 0)),
        sgpr_spills=int(entry.get(".sgpr_spill_count", 0)),
        wavefront=int(entry[".wavefront_size"]),
        max_workgroup=int(entry[".max_flat_workgroup_size"]),
    )


def read(data: bytes) -> CodeObject:
    """The code object ``data``; a ``LoweringError`` says what is missing or malformed."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise LoweringError("the code object is not an ELF64 file")
    machine = struct.unpack_from("<H", data, 0x12)[0]
    sections = _sections(data)
    metadata: dict[str, Any] | None = None
    for kind, offset, size, _ in sections:
        if kind != _SHT_NOTE:
            continue
        for name, note_kind, desc in _notes(data, offset, size):
            if name == "AMDGPU" and note_kind == NT_AMDGPU_METADATA:
                metadata = unpack(desc)
    if metadata is None:
        raise LoweringError("the code object has no NT_AMDGPU_METADATA note")
    kernels = tuple(_resources(entry) for entry in metadata.get("amdhsa.kernels", []))
    return CodeObject(
        machine,
        str(metadata.get("amdhsa.target", "")),
        tuple(_dynamic_symbols(data, sections)),
        kernels,
        metadata,
    )


def check_limits(code: CodeObject, chip: Chip) -> None:
    """Refuses a code object that is not for ``chip`` or whose kernels exceed its limits
    (registers, LDS beyond the dynamic part, spills to scratch, a missing ``.kd`` symbol)."""
    problems = []
    if code.machine != EM_AMDGPU:
        problems.append(f"e_machine is {code.machine}, not EM_AMDGPU ({EM_AMDGPU})")
    if not code.target.endswith(f"--{chip.name}") and f"--{chip.name}:" not in code.target:
        problems.append(f"amdhsa.target is '{code.target}', not {chip.name}")
    for k in code.kernels:
        where = f"kernel {k.name}"
        if k.symbol not in code.dynamic_symbols:
            problems.append(f"{where}: no dynamic symbol {k.symbol}")
        if k.wavefront != chip.wave:
            problems.append(f"{where}: wavefront {k.wavefront}, {chip.name} runs {chip.wave}")
        if k.vgprs + k.agprs > chip.max_vgprs:
            problems.append(f"{where}: {k.vgprs + k.agprs} VGPRs > {chip.max_vgprs}")
        if k.sgprs > chip.max_sgprs:
            problems.append(f"{where}: {k.sgprs} SGPRs > {chip.max_sgprs}")
        if k.lds_bytes > chip.lds_bytes:
            problems.append(f"{where}: {k.lds_bytes} bytes of LDS > {chip.lds_bytes}")
        if k.vgpr_spills or k.sgpr_spills or k.scratch_bytes:
            problems.append(
                f"{where}: spills to scratch ({k.vgpr_spills} VGPRs, {k.sgpr_spills} SGPRs, "
                f"{k.scratch_bytes} bytes per lane)"
            )
    if problems:
        raise LoweringError("the AMDGPU code object is unusable: " + "; ".join(problems))
