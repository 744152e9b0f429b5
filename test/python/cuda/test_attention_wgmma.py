"""The sm_90a flash-attention kernel (wgmma) without a GPU: which configurations take it, its
launch contract, the instructions in its PTX (wgmma from shared memory and from registers,
the async-proxy fence), ptxas's register report, and its warp-specialized form (the
default). Its arithmetic is checked on the card (test/gpu/check_attention.py)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cuda import toolchain
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.attention import AttentionConfig
from tessera.lowering.cuda.kernels.attention_wgmma import resolve_wgmma, wgmma_shape
from tessera.lowering.cuda.kernels.attention_wgmma_ws import COMPUTE_REGISTERS, PRODUCER_REGISTERS
from tessera.lowering.cuda.kernels.flash_attention import build_flash_attention

# The plain form (no producer warpgroup); the default form is checked against it below.
GEMMA_256 = AttentionConfig("bf16", 256, 8, 1, 1 / 16, causal=True, warp_specialized=False)
GEMMA_128 = AttentionConfig(
    "f16", 128, 8, 4, 128**-0.5, causal=True, window=64, softcap=50.0, warp_specialized=False
)


def _build(arch: str, configs: list[AttentionConfig]) -> tuple[list[KernelInfo], str]:
    with make_context(), ir.Location.unknown():
        km = KernelModule(arch)
        infos = [build_flash_attention(km, cfg) for cfg in configs]
        km.module.operation.verify()
        toolchain.to_nvvm(km.module)
        return infos, toolchain.to_ptx(km.module)


@pytest.fixture(scope="module")
def built() -> tuple[list[KernelInfo], str]:
    return _build("sm_90a", [GEMMA_256, GEMMA_128])


def _entry(ptx: str, name: str) -> str:
    start = ptx.index(f".entry {name}(")
    end = ptx.find(".entry ", start + 1)
    return ptx[start : end if end > 0 else len(ptx)]


def test_which_configurations_take_it() -> None:
    assert wgmma_shape(GEMMA_256) and wgmma_shape(GEMMA_128)
    assert not wgmma_shape(AttentionConfig("f32", 256, 8, 1, 0.1))
    assert not wgmma_shape(AttentionConfig("bf16", 96, 8, 1, 0.1))  # not a multiple of 64
    assert not wgmma_shape(AttentionConfig("bf16", 512, 8, 1, 0.1))  # past wgmma's n = 256
    assert not wgmma_shape(AttentionConfig("bf16", 64, 8, 1, 0.1, value_dim=48))
    # Other architectures, and wgmma=False, keep the mma.sync kernel.
    infos, _ = _build("sm_90", [GEMMA_256])
    assert not infos[0].name.startswith("flash_attention_wgmma")
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_flash_attention(km, AttentionConfig("bf16", 256, 8, 1, 0.1, wgmma=False))
        assert not info.name.startswith("flash_attention_wgmma")


def test_launch_contract(built: tuple[list[KernelInfo], str]) -> None:
    (gemma, small), _ = built
    assert gemma.name.startswith("flash_attention_wgmma_bf16_d256_h8kv1_causal_")
    assert gemma.grid == ("B*8", "cdiv(S, 128)", "1") and gemma.block == (256, 1, 1)
    # Q 128 x 256, two K and two V stages of 64 x 256, 1024 bytes of alignment slack.
    assert gemma.smem_bytes == 128 * 256 * 2 + 2 * 2 * 64 * 256 * 2 + 1024
    # D = 128: 128 keys a tile.
    assert small.smem_bytes == 128 * 128 * 2 + 2 * 2 * 128 * 128 * 2 + 1024


def test_ptx_runs_wgmma_from_shared_memory_and_registers(
    built: tuple[list[KernelInfo], str],
) -> None:
    (gemma, small), ptx = built
    body = _entry(ptx, gemma.name)
    # Q·Kᵀ: 16 k steps of m64n64k16 from descriptors; P·V: 4 register-A m64n256k16.
    assert body.count("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16") == 16
    assert body.count("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16") == 4
    register_a = re.findall(r"m64n256k16\.f32\.bf16\.bf16\s+\{[^}]+\},\s+\{([^}]+)\}", body)
    assert len(register_a) == 4 and all(len(words.split(",")) == 4 for words in register_a)
    # Each product is waited for before its results are read.
    assert set(re.findall(r"wgmma\.wait_group\.sync\.aligned\s+(\d)", body)) == {"0"}
    assert "fence.proxy.async.shared::cta" in body and "wgmma.fence.sync.aligned" in body
    assert re.search(r"cp\.async\.cg\.shared\.global \[[^]]+\], \[[^]]+\], 16, ", body)
    assert "ldmatrix" not in body and "mma.sync" not in body
    f16 = _entry(ptx, small.name)
    assert f16.count("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16") == 8 + 8


def test_no_local_memory(built: tuple[list[KernelInfo], str]) -> None:
    _, ptx = built
    report = toolchain.resource_usage(ptx, "sm_90a")
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores", report)
    assert len(frames) == 2 and all(f == ("0", "0") for f in frames), report
    assert "warning" not in report.lower(), report  # e.g. wgmma serialized by ptxas


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(stages=3), "shared memory"),
        (dict(block_m=96), "multiple of 64"),
        (dict(block_n=272), "from 16 to 256"),
        (dict(warps=4), "runs 8 warps"),
        (dict(block_n=256), "shared memory"),
    ],
)
def test_refuses_tiles_it_cannot_run(fields: dict[str, int], message: str) -> None:
    cfg = AttentionConfig("bf16", 256, 8, 1, 0.1, causal=True, **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        resolve_wgmma(cfg, "sm_90a")


def test_warp_specialized_form() -> None:
    """The default: a producer warpgroup after the two compute ones, 384 threads, 80 keys a
    tile at D = 256 (128 at D = 128), registers moved to the compute warpgroups, K/V handed
    over through mbarriers, and the compute warpgroups' products as in the plain form."""
    ws = replace(GEMMA_256, warp_specialized=True)
    assert AttentionConfig("bf16", 256, 8, 1, 0.1).warp_specialized
    assert resolve_wgmma(ws, "sm_90a").block_n == 80
    assert resolve_wgmma(replace(GEMMA_128, warp_specialized=True), "sm_90a").block_n == 128
    (info, plain), ptx = _build("sm_90a", [ws, GEMMA_256])
    assert info.name.startswith("flash_attention_wgmma_ws_bf16_d256_h8kv1_causal_")
    assert info.block == (384, 1, 1) and info.grid == plain.grid
    assert info.smem_bytes == 128 * 256 * 2 + 2 * 2 * 80 * 256 * 2 + 1024
    body = _entry(ptx, info.name)
    assert f"setmaxnreg.dec.sync.aligned.u32 \t{PRODUCER_REGISTERS};" in body
    assert f"setmaxnreg.inc.sync.aligned.u32 \t{COMPUTE_REGISTERS};" in body
    # The register file (64K) holds the producer's and both compute warpgroups' registers.
    assert 128 * (PRODUCER_REGISTERS + 2 * COMPUTE_REGISTERS) <= 65536
    assert "mbarrier.try_wait.parity" in body and "mbarrier.arrive" in body
    # The producer fences its landed copies before it arrives on the tile's barrier.
    assert re.search(r"cp\.async\.wait_group \t0;\s+fence\.proxy\.async\.shared::cta;", body)
    # One block-wide barrier (Q and the mbarriers, before the roles split), none per tile.
    assert body.count("bar.sync \t0;") == 1
    # Q·Kᵀ: 16 k steps of m64n80k16; P·V: 5 register-A m64n256k16 over the 80 keys.
    assert body.count("wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16") == 16
    assert body.count("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16") == 5
    # Other architectures keep the mma.sync kernel, which has no producer.
    infos, _ = _build("sm_90", [ws])
    assert infos[0].block == (256, 1, 1)
