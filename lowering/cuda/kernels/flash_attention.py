"""``tessera.attention.flash`` on CUDA: the kernel for a configuration, chosen per device and
shape among the three generators (``attention.py`` has the configuration they share)."""

from __future__ import annotations

from ..kernel import KernelInfo, KernelModule
from .attention import AttentionConfig, grid, kernel_name, resolve, typed_params
from .attention_mma import emit_mma_kernel
from .attention_simt import emit_simt_kernel
from .attention_wgmma import emit_wgmma_kernel, resolve_wgmma, wgmma_shape
from .attention_wgmma_ws import emit_warp_specialized_kernel


def build_flash_attention(km: KernelModule, cfg: AttentionConfig) -> KernelInfo:
    """Adds the kernel for ``cfg`` to ``km`` and returns how to launch it (``attention.py``
    gives the parameters). Tile fields left at their defaults are chosen for ``km.arch``."""
    simt = cfg.dtype == "f32" or not km.device.mma_attention
    if not simt and cfg.wgmma and km.device.wgmma and wgmma_shape(cfg):
        resolved = resolve_wgmma(cfg, km.arch)
        kind = "wgmma_ws" if resolved.warp_specialized else "wgmma"
        name = kernel_name(resolved).replace("flash_attention", f"flash_attention_{kind}", 1)
        emit = emit_warp_specialized_kernel if resolved.warp_specialized else emit_wgmma_kernel
        threads, smem = emit(km, resolved, name)
        return KernelInfo(name, typed_params(resolved.dtype), grid(resolved), (threads, 1, 1), smem)
    resolved = resolve(cfg, km.arch, simt)
    name = kernel_name(resolved)
    if simt:
        block = emit_simt_kernel(km, resolved, name)
        return KernelInfo(name, typed_params(resolved.dtype), grid(resolved), (block, 1, 1), 0)
    threads, smem = emit_mma_kernel(km, resolved, name)
    return KernelInfo(name, typed_params(resolved.dtype), grid(resolved), (threads, 1, 1), smem)
