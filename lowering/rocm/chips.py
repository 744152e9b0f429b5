"""The AMD GPUs the ROCm target compiles for, and the limits their code objects must respect.

Wave size decides how many threads share one program counter (64 on CDNA, 32 on RDNA). The
matrix instruction is MFMA on CDNA (gfx90a, gfx942) and WMMA on RDNA 3 (gfx1100). Register
limits are the most a kernel may allocate per lane: CDNA's unified file holds 512 VGPRs (256
architectural plus 256 accumulation registers), RDNA 3 has 256 per lane in wave32; the SGPR
limits are those the ISA manuals give for kernels (102 on gfx9, 106 on gfx11). LDS is 64 KiB
per workgroup on all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.errors import LoweringError


@dataclass(frozen=True)
class Chip:
    name: str
    wave: int
    matrix: str  # "mfma" or "wmma"
    lds_bytes: int
    max_vgprs: int
    max_sgprs: int


CHIPS = {
    "gfx90a": Chip("gfx90a", 64, "mfma", 65536, 512, 102),
    "gfx942": Chip("gfx942", 64, "mfma", 65536, 512, 102),
    "gfx1100": Chip("gfx1100", 32, "wmma", 65536, 256, 106),
}
DEFAULT_CHIP = "gfx942"


def chip(name: str) -> Chip:
    """The chip called ``name``; a ``LoweringError`` lists the known ones."""
    found = CHIPS.get(name)
    if found is None:
        raise LoweringError(f"unknown AMD GPU '{name}' (known: {', '.join(CHIPS)})")
    return found
