"""The flash-attention kernel generator without a GPU: the launch contract, the canonical
K/V loop and its pipelining, the instructions in the PTX (tensor cores, ldmatrix, cp.async),
ptxas's register report, and the kernels' arithmetic, run by the kernel interpreter
(``gpu_interpreter``, which also checks bounds, barriers and async-copy waits) on tiny inputs
against float64."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import pytest
from gpu_interpreter import KINDS, Buffer, Kernel, KernelFault, kernels_in, round_to
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cuda import toolchain
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.attention import (
    STRIDE_NAMES,
    AttentionConfig,
    resolve,
)
from tessera.lowering.cuda.kernels.flash_attention import build_flash_attention
from tessera.runtime import expr

GEMMA_256 = AttentionConfig("bf16", 256, 8, 1, 1 / 16, causal=True)
TINY_F16 = AttentionConfig("f16", 24, 4, 2, 24**-0.5, causal=True, window=6, softcap=50.0)
TINY_F32 = AttentionConfig("f32", 36, 4, 2, 36**-0.5, causal=True, softcap=30.0)


def _build(arch: str, configs: list[AttentionConfig]) -> tuple[list[KernelInfo], str, str]:
    """KernelInfos, the kernels' IR before lowering, and the PTX."""
    with make_context(), ir.Location.unknown():
        km = KernelModule(arch)
        infos = [build_flash_attention(km, cfg) for cfg in configs]
        km.module.operation.verify()
        before = str(km.module)
        toolchain.to_nvvm(km.module)
        return infos, before, toolchain.to_ptx(km.module)


@pytest.fixture(scope="module", params=["sm_80", "sm_90"])
def built(request: pytest.FixtureRequest) -> tuple[str, list[KernelInfo], str, str]:
    arch = request.param
    return (arch, *_build(arch, [GEMMA_256, TINY_F16, TINY_F32]))


def test_launch_contract(built: tuple[str, list[KernelInfo], str, str]) -> None:
    arch, infos, _, _ = built
    gemma, tiny, simt = infos
    names = [p.name for p in gemma.params]
    assert names == ["q", "k", "v", "o", *STRIDE_NAMES, "B", "S", "T"]
    assert [p.kind for p in gemma.params[4:16]] == ["i64"] * 12
    assert [p.kind for p in gemma.params[16:]] == ["i32"] * 3
    assert {p.dtype for p in gemma.params[:4]} == {"bf16"}
    assert gemma.grid == ("B*8", "cdiv(S, 128)", "1") and gemma.block == (256, 1, 1)
    assert tiny.grid == ("B*4", "cdiv(S, 64)", "1") and tiny.block == (128, 1, 1)
    assert simt.grid == ("B*4", "cdiv(S, 4)", "1") and simt.smem_bytes == 0
    # Q tile 128 x (256 + 8) bf16 plus, per stage, K and V tiles of 64 rows.
    stages = 2 if arch == "sm_90" else 1
    assert gemma.smem_bytes == 128 * 264 * 2 + stages * 2 * 64 * 264 * 2
    assert gemma.name.startswith("flash_attention_bf16_d256_h8kv1_causal_")


def test_key_loop_goes_through_the_pipelining_pass(
    built: tuple[str, list[KernelInfo], str, str],
) -> None:
    arch, _, before, _ = built
    stages = re.findall(r"tessera.pipeline_stages = (\d+)", before)
    if arch == "sm_90":
        assert stages == ["2", "2"]  # the two tensor-core kernels
        assert "nvgpu.device_async_wait %" in before and "numGroups = 0" in before
    else:
        # A D=256 stage does not fit twice next to the Q tile in an A100's shared memory.
        assert stages == ["2"]
        assert before.count("tessera.pipeline}") + before.count("tessera.pipeline,") >= 1


def test_ptx_uses_tensor_cores_and_async_copies(
    built: tuple[str, list[KernelInfo], str, str],
) -> None:
    arch, infos, _, ptx = built
    gemma, tiny, simt = (_entry(ptx, info.name) for info in infos)
    assert f".target {arch}" in ptx
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in gemma
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in tiny
    for body in (gemma, tiny):
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in body
        assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in body
        assert "ex2.approx.ftz.f32" in body and "shfl.sync.bfly.b32" in body
    assert re.search(r"cp\.async\.cg\.shared\.global \[[^]]+\], \[[^]]+\], 16, ", gemma)
    # D = 24 rows are 48 bytes: 16-byte copies, the padded columns zero-filled.
    assert "cp.async.cg.shared.global" in tiny
    # The tensor-core kernel walks 256 MMAs per key tile: 16 k-steps x 8 n-tiles for Q·Kᵀ
    # and 4 x 32 for P·V.
    assert gemma.count("mma.sync.aligned") == 256
    assert "mma.sync" not in simt and "cp.async" not in simt


def test_no_local_memory(built: tuple[str, list[KernelInfo], str, str]) -> None:
    arch, _, _, ptx = built
    report = toolchain.resource_usage(ptx, arch)
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores", report)
    assert len(frames) == 3 and all(f == ("0", "0") for f in frames), report
    registers = [int(r) for r in re.findall(r"Used (\d+) registers", report)]
    assert max(registers) <= 255


def _entry(ptx: str, name: str) -> str:
    start = ptx.index(f".entry {name}(")
    end = ptx.find(".entry ", start + 1)
    return ptx[start : end if end > 0 else len(ptx)]


# ---------------------------------------------------------------------------------------------
# The kernels' arithmetic, interpreted


def _reference(cfg: AttentionConfig, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    group = cfg.heads_q // cfg.heads_kv
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = np.einsum("bhsd,bhtd->bhst", q, k) * cfg.scale
    if cfg.softcap:
        s = cfg.softcap * np.tanh(s / cfg.softcap)
    S, T = q.shape[2], k.shape[2]
    last = np.arange(S)[:, None] + T - S
    key = np.arange(T)[None, :]
    visible = np.ones((S, T), dtype=bool)
    if cfg.causal:
        visible &= key <= last
    if cfg.window:
        visible &= key > last - cfg.window
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    total = p.sum(axis=-1, keepdims=True)
    return np.einsum("bhst,bhtd->bhsd", p, v) / np.where(total > 0, total, 1.0)


def _kernel(
    cfg: AttentionConfig, mutate: Callable[[ir.Operation], None] | None
) -> tuple[Kernel, KernelInfo]:
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90")
        info = build_flash_attention(km, cfg)
        func = kernels_in(km.module)[info.name]
        if mutate is not None:
            mutate(func)
        return Kernel(func), info


def _interpret(
    cfg: AttentionConfig,
    B: int,
    S: int,
    T: int,
    layout: str,
    mutate: Callable[[ir.Operation], None] | None = None,
) -> float:
    """Runs the kernel for ``cfg`` (its IR changed by ``mutate`` first, when given) in the
    interpreter on random inputs in ``layout`` (bhsd or bshd); returns the relative error
    against float64 (NaN if an output was not written)."""
    rng = np.random.default_rng(S * 1000 + T)
    dv = cfg.dv
    kernel, info = _kernel(cfg, mutate)
    kind = KINDS[cfg.dtype]
    logical, buffers, strides = {}, {}, {}
    shapes = {"q": (cfg.heads_q, S, cfg.head_dim), "k": (cfg.heads_kv, T, cfg.head_dim)}
    shapes |= {"v": (cfg.heads_kv, T, dv), "o": (cfg.heads_q, S, dv)}
    for name, (h, length, width) in shapes.items():
        x = rng.standard_normal((B, h, length, width)).astype(np.float32) * 2.0
        logical[name] = round_to(kind, x)
        stored = logical[name] if layout == "bhsd" else logical[name].transpose(0, 2, 1, 3)
        if name == "o":
            buffers[name] = Buffer.poisoned(stored.size, cfg.dtype, "o")
        else:
            buffers[name] = Buffer.of(np.ascontiguousarray(stored), cfg.dtype, name)
        if layout == "bhsd":
            strides[name] = (h * length * width, length * width, width)
        else:
            strides[name] = (length * h * width, width, h * width)
    scalars = {"B": B, "S": S, "T": T}
    for name in "qkvo":
        scalars |= dict(zip((f"{name}_sb", f"{name}_sh", f"{name}_ss"), strides[name], strict=True))
    args = [buffers[p.name] if p.kind == "buffer" else scalars[p.name] for p in info.params]
    grid = [expr.evaluate(g, scalars) for g in info.grid]
    kernel.launch(grid, info.block, info.smem_bytes, args)
    out = buffers["o"].values()
    shape = (B, cfg.heads_q, S, dv) if layout == "bhsd" else (B, S, cfg.heads_q, dv)
    out = out.reshape(shape).astype(np.float64)
    if layout == "bshd":
        out = out.transpose(0, 2, 1, 3)
    if np.isnan(out).any():
        return math.nan
    ref = _reference(cfg, *(logical[t].astype(np.float64) for t in "qkv"))
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


BF16_TINY = AttentionConfig("bf16", 24, 4, 2, 0.2, causal=True, window=6, softcap=50.0)
DV48 = AttentionConfig("bf16", 36, 2, 1, 0.15, value_dim=48, causal=True)
TWO_ROW_TILES = AttentionConfig("bf16", 32, 2, 2, 0.15, causal=True, block_m=64, warps=2)
THREE_STAGES = AttentionConfig("bf16", 64, 2, 1, 0.125, block_m=64, block_n=32, stages=3)


@pytest.mark.parametrize(
    ("cfg", "B", "S", "T", "layout"),
    [
        (TINY_F16, 2, 37, 37, "bshd"),
        (BF16_TINY, 1, 37, 37, "bhsd"),
        (DV48, 1, 70, 150, "bshd"),
        (TWO_ROW_TILES, 1, 150, 70, "bhsd"),
        (THREE_STAGES, 1, 90, 130, "bhsd"),
        (TINY_F32, 1, 37, 50, "bshd"),
    ],
    ids=[
        "f16-softcap-window",
        "bf16-softcap-window",
        "dv48-s<t",
        "2-row-tiles-s>t",
        "3-stages",
        "f32",
    ],
)
def test_interpreted_kernel_matches_float64(
    cfg: AttentionConfig, B: int, S: int, T: int, layout: str
) -> None:
    error = _interpret(cfg, B, S, T, layout)
    bound = {"bf16": 2.5 * 2**-8, "f16": 2.5 * 2**-11, "f32": 1e-6}[cfg.dtype]
    assert error <= bound, f"relative error {error:.3g} (bound {bound:.3g})"


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="multiple of kv heads"):
        resolve(AttentionConfig("bf16", 64, 6, 4, 0.1), "sm_90a")
    with pytest.raises(ValueError, match="needs causal"):
        resolve(AttentionConfig("bf16", 64, 4, 4, 0.1, window=8), "sm_90a")
    with pytest.raises(ValueError, match="shared memory"):
        resolve(AttentionConfig("bf16", 256, 4, 4, 0.1, stages=3), "sm_90a")
    assert resolve(GEMMA_256, "sm_80").stages == 1
    # 99 KiB parts: the key tile shrinks until Q and one K/V stage fit.
    assert resolve(GEMMA_256, "sm_86").block_n == 16
    assert asdict(resolve(GEMMA_256, "sm_90a"))["q_in_registers"] is False


def _erase_first(name: str) -> Callable[[ir.Operation], None]:
    def mutate(func: ir.Operation) -> None:
        found: list[ir.Operation] = []

        def visit(op: ir.Operation) -> None:
            for region in op.regions:
                for block in region.blocks:
                    for child in block.operations:
                        if child.operation.name == name:
                            found.append(child.operation)
                        visit(child.operation)

        visit(func)
        found[0].erase()

    return mutate


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu.barrier", "a race on byte .* with no gpu.barrier between"),
        ("nvgpu.device_async_wait", "while an async copy into it is in flight"),
    ],
)
def test_broken_synchronisation_is_caught(name: str, message: str) -> None:
    """The Q tile's copy, wait and barrier come first: without one of them, the first
    ldmatrix of Q reads a tile other warps copy, or one still in flight."""
    with pytest.raises(KernelFault, match=message):
        _interpret(BF16_TINY, 1, 37, 37, "bhsd", _erase_first(name))
