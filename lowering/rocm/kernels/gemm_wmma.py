"""The GEMM family ``mma`` on RDNA 3 (gfx1100): WMMA 16x16x16 in wave32 (``gemm_matrix``
builds it)."""

from __future__ import annotations

from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.gemm import GemmConfig

from . import gemm_matrix


def launch(cfg: GemmConfig, name: str, smem: int) -> KernelInfo:
    return gemm_matrix.launch(cfg, name, smem, gemm_matrix.WMMA)


def emit(km: KernelModule, cfg: GemmConfig, name: str) -> int:
    return gemm_matrix.emit(km, cfg, name, gemm_matrix.WMMA)
