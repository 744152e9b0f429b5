"""The ROCm target's GEMM kernels run in the kernel interpreter: the MFMA (gfx942, wave64) and
WMMA (gfx1100, wave32) kernels and the f32 SIMT kernel, after ``tessera-schedule-lds-copies``
has double-buffered their LDS tiles, against a float64 reference of the same rounded inputs
(the bound of ``test/python/cuda/test_gemm_interpreted.py``: one rounding to the dtype plus f32
accumulation over K). The interpreter checks every access, the barriers (an LDS buffer
overwritten while another wave reads it is a race) and that matrix instructions run in whole
waves. Unrun on AMD hardware: this is the numerical check there is."""

from __future__ import annotations

import math
from collections.abc import Callable

import amd_interpreter  # noqa: F401  (registers the AMD rules)
import numpy as np
import pytest
import torch
from gpu_interpreter import KINDS, Buffer, Kernel, kernels_in, round_to
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemmTile, build_gemm
from tessera.lowering.rocm.device import Amd
from tessera.runtime import expr

G = GemmConfig
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "f16": 2.0**-11, "f32": 2.0**-24}
SMALL = GemmTile(64, 64, 32, 2, 2, 2, 8)

CASES = [
    pytest.param("gfx942", G("bf16", 200, 72), 37, id="mfma-bf16"),
    pytest.param("gfx942", G("f16", 72, 40, tile=SMALL), 70, id="mfma-f16-two-k-tiles"),
    pytest.param("gfx90a", G("bf16", 70, 36, transpose_w=False, tile=SMALL), 21, id="mfma-kn"),
    pytest.param(
        "gfx942", G("bf16", 72, 40, gated=True, tile=SMALL), 19, id="mfma-gated-gelu-tanh"
    ),
    pytest.param(
        "gfx942", G("bf16", 72, 40, has_bias=True, softcap=30.0, tile=SMALL), 19, id="mfma-bias"
    ),
    pytest.param("gfx1100", G("bf16", 72, 40), 37, id="wmma-bf16"),
    pytest.param("gfx1100", G("f16", 70, 36, transpose_w=False), 21, id="wmma-kn"),
    pytest.param("gfx942", G("f32", 72, 40, tile=GemmTile(64, 64, 16, 2, 2, 2, 8)), 37, id="simt"),
]


def build(
    arch: str, cfg: GemmConfig, mutate: Callable[[ir.Operation], None] | None = None
) -> tuple[Kernel, KernelInfo, str]:
    """The kernel of ``cfg`` for ``arch`` (its IR changed by ``mutate`` first, when given)."""
    with make_context(), ir.Location.unknown():
        km = KernelModule(arch, device=Amd(arch))
        info = build_gemm(km, cfg)
        func = kernels_in(km.module)[info.name]
        if mutate is not None:
            mutate(func)
        return Kernel(func), info, str(func)


def run(
    arch: str, cfg: GemmConfig, M: int, mutate: Callable[[ir.Operation], None] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Runs the GEMM on seeded inputs with M rows; returns (y, float64 reference, its IR)."""
    kernel, info, text = build(arch, cfg, mutate)
    kind = KINDS[cfg.dtype]
    rng = np.random.default_rng(cfg.N * 1000 + M)
    shape = (cfg.N, cfg.K) if cfg.transpose_w else (cfg.K, cfg.N)
    x = round_to(kind, rng.standard_normal((M, cfg.K)))
    w = round_to(kind, rng.standard_normal(shape) / math.sqrt(cfg.K))
    w2 = round_to(kind, rng.standard_normal(shape) / math.sqrt(cfg.K))
    bias = round_to(kind, rng.standard_normal(cfg.N))
    y = Buffer.poisoned(M * cfg.N, cfg.dtype, "y")
    buffers = {"x": x, "w": w, "w2": w2, "bias": bias}
    bindings: dict[str, object] = {n: Buffer.of(v, cfg.dtype, n) for n, v in buffers.items()}
    bindings |= {"y": y, "M": M}
    grid = [expr.evaluate(g, {"M": M}) for g in info.grid]
    kernel.launch(grid, info.block, info.smem_bytes, [bindings[p.name] for p in info.params])
    to64 = {name: v.astype(np.float64) for name, v in buffers.items()}
    rows = (lambda m: m) if cfg.transpose_w else (lambda m: m.T)
    acc = to64["x"] @ rows(to64["w"]).T
    if cfg.gated:
        up = to64["x"] @ rows(to64["w2"]).T
        ref = torch.nn.functional.gelu(torch.from_numpy(acc), approximate="tanh").numpy() * up
    else:
        ref = acc + (to64["bias"] if cfg.has_bias else 0.0)
    if cfg.softcap:
        ref = cfg.softcap * np.tanh(ref / cfg.softcap)
    return y.values().reshape(-1, cfg.N)[:M].astype(np.float64), ref, text


@pytest.mark.parametrize(("arch", "cfg", "M"), CASES)
def test_gemm_matches_float64(arch: str, cfg: GemmConfig, M: int) -> None:
    out, ref, text = run(arch, cfg, M)
    assert not np.isnan(out).any(), f"{int(np.isnan(out).sum())} outputs were not written"
    error = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    bound = UNIT_ROUNDOFF[cfg.dtype] + 2.0 * math.sqrt(cfg.K) * 2.0**-24
    assert error <= bound, f"relative error {error:.3g} (bound {bound:.3g})"
    # What ran is the AMD form: LDS double-buffered through registers, no async copies.
    assert "tessera.pipeline_stages = 2" in text and "nvgpu." not in text
    if cfg.dtype != "f32":
        assert ("amdgpu.wmma" if arch == "gfx1100" else "amdgpu.mfma") in text


def _swap_operands(func: ir.Operation) -> None:
    """Feeds every MFMA its B fragment as A and A as B: a layout mistake (the transpose of the
    product's tile) a generator could make."""
    found: list[ir.Operation] = []

    def collect(op: ir.Operation) -> ir.WalkResult:
        if op.name == "amdgpu.mfma":
            found.append(op)
        return ir.WalkResult.ADVANCE

    func.walk(collect, ir.WalkOrder.PRE_ORDER)
    for mfma in found:
        a, b = mfma.operands[0], mfma.operands[1]
        mfma.operands[0] = b
        mfma.operands[1] = a


def test_a_wrong_mfma_layout_is_caught() -> None:
    """The interpreter's MFMA layout is not the generator's own, so a generator that gets the
    layout wrong fails the comparison."""
    out, ref, _ = run("gfx942", G("bf16", 64, 32, tile=SMALL), 16, _swap_operands)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) > 0.1
