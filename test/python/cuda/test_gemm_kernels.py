"""The GEMM kernels without a GPU: their launch contracts, the family each configuration
takes, and the PTX they assemble to for sm_80 and sm_90a (tensor-core MMA, cp.async,
ldmatrix, a pipelined main loop, no local memory). The numbers are checked on a GPU by
test/gpu/check_gemm.py."""

from __future__ import annotations

import re

import pytest
from mlir import ir

from tessera.context import make_context
from tessera.errors import LoweringError
from tessera.lowering.cuda import toolchain
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.gemm import (
    GemmConfig,
    GemmTile,
    GemvTile,
    build_gemm,
    select_gemm,
)
from tessera.lowering.cuda.kernels.gemm_wgmma import WgmmaConfig, build_wgmma_gemm

ARCHS = ["sm_80", "sm_90a"]
MMA = "mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32"


def compiled(arch: str, *configs: GemmConfig) -> tuple[list[KernelInfo], str, str]:
    """KernelInfos, PTX and the ptxas report of ``configs`` built into one module."""
    with make_context(), ir.Location.unknown():
        km = KernelModule(arch)
        infos = [build_gemm(km, cfg) for cfg in configs]
        toolchain.to_nvvm(km.module)
        ptx = toolchain.to_ptx(km.module)
    return infos, ptx, toolchain.resource_usage(ptx, arch)


def kernel_ptx(ptx: str, name: str) -> str:
    """The body of entry ``name`` in ``ptx``."""
    start = ptx.index(f".entry {name}(")
    end = ptx.find(".entry ", start + 1)
    return ptx[start : end if end > 0 else len(ptx)]


def assert_no_local_memory(report: str) -> None:
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores", report)
    assert frames and all(f == ("0", "0") for f in frames), report


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_mma_kernel_uses_tensor_cores_and_async_copies(arch: str, dtype: str) -> None:
    (info,), ptx, report = compiled(arch, GemmConfig(dtype, 2048, 2048))
    body = kernel_ptx(ptx, info.name)
    assert body.count(MMA.format(t=dtype)) == 64  # 4 x 8 tiles per warp, 2 k steps
    assert body.count("ldmatrix.sync.aligned.m8n8.x4.shared.b16") == 16
    # 128x32 of x and of w per stage, 16 bytes per copy, 128 threads: 4 + 4 per iteration,
    # and the same again for each of the 3 prologue stages
    assert body.count("cp.async.cg.shared.global") == 8 * 4
    assert "cp.async.wait_group \t2;" in body.replace("    ", "\t")
    assert "cp.async.commit_group" in body
    assert ".maxntid 128, 1, 1" in body
    assert_no_local_memory(report)
    assert info.smem_bytes == 4 * (128 * 32 + 128 * 32) * 2
    assert info.grid == ("cdiv(M, 128) * 16", "1", "1")
    assert info.block == (128, 1, 1)
    assert [p.name for p in info.params] == ["x", "w", "y", "M"]


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_as_k_by_n_uses_transposing_ldmatrix(arch: str) -> None:
    (info,), ptx, report = compiled(arch, GemmConfig("bf16", 256, 512, transpose_w=False))
    body = kernel_ptx(ptx, info.name)
    assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in body
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in body  # x stays untransposed
    assert_no_local_memory(report)


def test_gated_softcap_bias_and_edges_compile() -> None:
    configs = [
        GemmConfig("bf16", 16384, 2048, gated=True, activation="gelu_tanh"),
        GemmConfig("bf16", 16384, 2048, gated=True, activation="silu"),
        GemmConfig("bf16", 200, 72, has_bias=True, softcap=30.0),
    ]
    infos, ptx, report = compiled("sm_90a", *configs)
    gated = kernel_ptx(ptx, infos[0].name)
    assert gated.count(MMA.format(t="bf16")) == 2 * 4 * 4 * 2  # two weights, 4x4 tiles, 2 k steps
    assert [p.name for p in infos[0].params] == ["x", "w", "w2", "y", "M"]
    assert [p.name for p in infos[2].params] == ["x", "w", "bias", "y", "M"]
    # 200 and 72 are not multiples of the tile: copies carry a source size (zero fill)
    edges = kernel_ptx(ptx, infos[2].name)
    assert re.search(r"cp\.async\.cg\.shared\.global \[[^]]+\], \[[^]]+\], 16, %r\d+;", edges)
    assert_no_local_memory(report)


def test_f32_takes_the_simt_kernel_without_tensor_cores() -> None:
    (info,), ptx, report = compiled("sm_80", GemmConfig("f32", 200, 72, transpose_w=False))
    body = kernel_ptx(ptx, info.name)
    assert info.name.startswith("gemm_simt_f32")
    assert "mma.sync" not in body and "fma.rn.f32" in body
    assert "ld.shared.v4.f32" in body or "ld.shared.v4.b32" in body
    assert "cp.async" in body
    assert_no_local_memory(report)


@pytest.mark.parametrize("transpose_w", [True, False])
def test_gemv_uses_wide_loads_and_shuffles(transpose_w: bool) -> None:
    cfg = select_gemm(GemmConfig("bf16", 16384, 2048, transpose_w=transpose_w), m_hint=1)
    (info,), ptx, report = compiled("sm_90a", cfg)
    body = kernel_ptx(ptx, info.name)
    assert info.name.startswith("gemm_gemv")
    assert "ld.global.v4.b32" in body  # 8 bf16 of w per load
    assert "shfl.sync.bfly.b32" in body
    assert_no_local_memory(report)
    assert info.grid[1] == "cdiv(M, 1)"


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("gated", [False, True])
def test_decode_gemvs_keep_their_accumulators_in_registers(gated: bool, dtype: str) -> None:
    """The GEMV a decode step of 8 sequences takes spills nothing: spilled accumulators cut
    the gated MLP's GEMV to 47 GB/s on an H100 (two columns a warp at 8 rows)."""
    cfg = select_gemm(GemmConfig(dtype, 16384, 2048, gated=gated), m_hint=8)
    assert cfg.gemv.rows == 8
    (_info,), _ptx, report = compiled("sm_90a", cfg)
    assert_no_local_memory(report)


def test_select_gemm_picks_the_family() -> None:
    cfg = GemmConfig("bf16", 2048, 2048)
    assert select_gemm(cfg, 1).kernel == "gemv" and select_gemm(cfg, 1).gemv.rows == 1
    assert select_gemm(cfg, 3).gemv.rows == 4
    assert select_gemm(cfg, 9).kernel == "mma"
    assert select_gemm(cfg, None).kernel == "mma"
    assert select_gemm(GemmConfig("f32", 64, 64), 100).kernel == "simt"
    # an odd contiguous dimension cannot go through 16-bit cp.async
    assert select_gemm(GemmConfig("bf16", 64, 63), 100).kernel == "gemv"


def test_same_config_builds_once() -> None:
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_80")
        first = build_gemm(km, GemmConfig("bf16", 256, 256))
        second = build_gemm(km, GemmConfig("bf16", 256, 256))
    assert first == second


@pytest.mark.parametrize(
    "config, message",
    [
        (lambda: GemmConfig("bf16", 64, 64, gated=True, has_bias=True), "takes no bias"),
        (lambda: GemmConfig("i8", 64, 64), "dtype must be one of"),
        (lambda: GemmConfig("bf16", 64, 64, gated=True, activation="relu"), "activation"),
        (lambda: GemmConfig("bf16", 64, 64, softcap=0.0), "softcap must be positive"),
    ],
)
def test_bad_configs_are_refused(config, message: str) -> None:
    with pytest.raises(LoweringError, match=message):
        config()


def test_bad_tiles_are_refused() -> None:
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_80")
        with pytest.raises(LoweringError, match="block_m 96 is not a multiple"):
            build_gemm(km, GemmConfig("bf16", 64, 64, tile=GemmTile(block_m=96, warps_m=4)))
        with pytest.raises(LoweringError, match="simt gemm takes f32"):
            build_gemm(km, GemmConfig("bf16", 64, 64, kernel="simt"))
        with pytest.raises(LoweringError, match=r"cannot be copied with cp\.async"):
            build_gemm(km, GemmConfig("bf16", 64, 63))
        with pytest.raises(LoweringError, match="every field must be >= 1"):
            build_gemm(km, GemmConfig("bf16", 64, 64, kernel="gemv", gemv=GemvTile(rows=0)))


def test_hopper_gemm_uses_wgmma_tma_and_mbarriers() -> None:
    """The sm_90a GEMM: per 64-wide k tile, two m64 halves of four k16 wgmma from shared
    memory; TMA copies two tiles ahead (a prologue of two tiles, one refill per tile) on
    mbarriers; one wgmma group left in flight; no local memory."""
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_wgmma_gemm(km, WgmmaConfig("bf16", 2048, 2048, stages=3))
        toolchain.to_nvvm(km.module)
        ptx = toolchain.to_ptx(km.module)
    body = kernel_ptx(ptx, info.name)
    assert body.count("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16") == 8
    assert body.count("cp.async.bulk.tensor.2d.shared") == 2 * 2 + 2
    assert "mbarrier.try_wait.parity.shared.b64" in body
    waits = re.findall(r"wgmma\.wait_group\.sync\.aligned\s+(\d)", body)
    assert sorted(set(waits)) == ["0", "1"]
    assert_no_local_memory(toolchain.resource_usage(ptx, "sm_90a"))
    assert info.smem_bytes == 3 * (128 * 64 + 128 * 64) * 2 + 1024
    assert [p.kind for p in info.params] == ["tensormap", "tensormap", "buffer", "i32"]
    assert info.grid == ("cdiv(M, 128) * 16", "1", "1")


def test_warp_specialized_hopper_gemm() -> None:
    """Two consumer warpgroups and a producer: 384 threads; the producer gives registers up
    and the consumers take them (setmaxnreg); each consumer's k tile is 4 k16 wgmma of
    m64n256 on its own 64 rows (LLVM may unroll the loop); the producer waits on the
    consumers' release (one arrival per consumer warpgroup) before refilling a stage."""
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        cfg = WgmmaConfig("bf16", 16384, 2048, 128, 256, 4, consumers=2)
        info = build_wgmma_gemm(km, cfg)
        toolchain.to_nvvm(km.module)
        ptx = toolchain.to_ptx(km.module)
    body = kernel_ptx(ptx, info.name)
    assert info.block == (384, 1, 1) and info.name.endswith("c2")
    assert info.smem_bytes == 4 * (128 * 64 + 256 * 64) * 2 + 1024
    assert re.search(r"setmaxnreg\.dec\.sync\.aligned\.u32\s+40;", body)
    assert re.search(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+232;", body)
    wgmmas = body.count("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16")
    assert wgmmas and wgmmas % 4 == 0  # LLVM may unroll the k loop
    assert "mbarrier.arrive.shared.b64" in body  # a consumer releases a stage
    assert body.count("mbarrier.try_wait.parity.shared.b64") >= 2  # full and empty
    assert_no_local_memory(toolchain.resource_usage(ptx, "sm_90a"))


@pytest.mark.parametrize(
    "config, message",
    [
        (lambda: WgmmaConfig("f32", 64, 64), "bf16 or f16"),
        (lambda: WgmmaConfig("bf16", 64, 60), "16-byte aligned"),
        (lambda: WgmmaConfig("bf16", 64, 64, block_m=96), "not a wgmma tile"),
        (lambda: WgmmaConfig("bf16", 64, 64, block_m=64, consumers=2), "cannot split 64 rows"),
        (lambda: WgmmaConfig("bf16", 64, 64, consumers=3), "cannot split"),
        (
            lambda: WgmmaConfig("bf16", 64, 64, 256, 256, consumers=2),
            "256 accumulators a thread",
        ),
    ],
)
def test_hopper_gemm_refuses_what_it_cannot_run(config, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        config()
