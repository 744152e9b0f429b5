"""The AMD device of the shared kernel generators (``lowering/cuda/device.py`` says what a
device decides).

- Target attribute ``#rocdl.target<chip = ..., abi = "500">``: code object version 5, which
  every ROCm runtime since 5.x loads.
- ``sqrt``: ``math.sqrt``, which the ROCm lowering (``expand_math.py``) makes the
  ``llvm.sqrt.f32`` intrinsic; the AMDGPU backend expands it correctly rounded unless told
  otherwise (no device library is involved).
- ``shuffle_xor``: ``gpu.shuffle xor`` of width 32, which ROCDL lowers to ``ds_bpermute``
  confined to the lane's group of 32 (half a wave64, or a whole wave32).
- ``stage_tiles``: AMD has no cp.async; each thread loads its vectors of the tile into
  registers and stores them into LDS (``lds_copies.py``), and ``pipeline`` double-buffers the
  loop (``schedule_lds_copies.py``).
- The tensor-core GEMM family is ``kernels/gemm_mfma.py`` or ``kernels/gemm_wmma.py`` (by
  chip); attention
  runs the SIMT kernel for every dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlir import ir
from mlir.dialects import arith, gpu, math

from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemmTile

from .chips import Chip, chip
from .lds_copies import stage_tiles

if TYPE_CHECKING:
    from tessera.lowering.cuda.device import StagedTile
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.gemm_ir import Ix

# Lanes a shuffle stays within: the shared SIMT kernels reduce over groups of 32.
SHUFFLE_WIDTH = 32


class Amd:
    """An AMD GPU (``gfx90a``, ``gfx942``, ``gfx1100``)."""

    kind = "rocm"
    mma_attention = False
    # The GEMV spills registers at its tile here: the decode step keeps the MFMA/WMMA GEMMs.
    decode_gemv = False
    wgmma = False
    # HIP has no programmatic dependent launch: each kernel starts after the one before it.
    programmatic_launch = False
    # The weight prefetch ahead of the decode GEMVs is an NVIDIA bulk-copy instruction.
    l2_bulk_prefetch = False

    def __init__(self, arch: str) -> None:
        self.chip: Chip = chip(arch)
        self.arch = arch
        self.wave = self.chip.wave

    def target_attribute(self) -> ir.Attribute:
        return ir.Attribute.parse(f'#rocdl.target<chip = "{self.arch}", abi = "500">')

    def sqrt(self, km: KernelModule, value: ir.Value) -> ir.Value:
        return math.sqrt(value)

    def shuffle_xor(self, value: ir.Value, mask: int) -> ir.Value:
        i32 = ir.IntegerType.get_signless(32)
        offset = arith.constant(i32, mask)  # type: ignore[call-arg]
        width = arith.constant(i32, SHUFFLE_WIDTH)  # type: ignore[call-arg]
        return gpu.shuffle(value, offset, width, gpu.ShuffleMode.XOR)[0]

    def stage_tiles(self, ix: Ix, kt: ir.Value, tiles: Sequence[StagedTile]) -> None:
        stage_tiles(ix, kt, tiles)

    def pipeline(self, function: ir.Operation, stages: int) -> None:
        from .schedule_lds_copies import Options, schedule_lds_copies

        # One tile in registers while the other is read: two LDS buffers whatever depth the
        # tile asked for (the NVIDIA tiles' stages count cp.async groups in flight).
        schedule_lds_copies(function, Options(stages=min(stages, 2)))

    def gemm_tile(self, cfg: GemmConfig) -> GemmTile | None:
        if self.chip.matrix != "wmma" or cfg.family != "mma":
            return None
        # wave32 holds half the registers per lane's work of a wave64: the default 64x64 wave
        # tile spills, so each wave takes 32x32 (four 16x16 accumulators per weight).
        return GemmTile(block_m=64, block_n=64, block_k=32, warps_m=2, warps_n=2, stages=2)

    def gemm_module(self, family: str) -> str:
        if family == "mma":
            return f"tessera.lowering.rocm.kernels.gemm_{self.chip.matrix}"
        return f"tessera.lowering.cuda.kernels.gemm_{family}"
