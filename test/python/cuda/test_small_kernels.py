"""The memory-bound CUDA kernels (RMSNorm, RoPE, lookup, elementwise) without a GPU: their
launch contracts, their layouts, and the PTX they assemble to for sm_80 and sm_90a (16-byte
accesses, shuffle reductions, correctly rounded square roots, no local memory). The numbers
are checked on a GPU by test/gpu/check_small_kernels.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from elementwise_ir import TRANSPOSE, softcap_ir
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cpu.rope import inverse_frequencies
from tessera.lowering.cuda import toolchain
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.elementwise import (
    ElementwiseError,
    build_elementwise,
    generics_from_text,
    plan_elementwise,
)
from tessera.lowering.cuda.kernels.lookup import LookupConfig, build_lookup, rounded_scale
from tessera.lowering.cuda.kernels.rms_norm import RmsNormConfig, build_rms_norm, row_layout
from tessera.lowering.cuda.kernels.rope import RopeConfig, build_rope, rope_layout

ARCHS = ["sm_80", "sm_90a"]

SOFTCAP = softcap_ir(256)
BROADCAST_MUL = """
func.func @f(%x: tensor<?x?x48xbf16>, %w: tensor<48xbf16>) -> tensor<?x?x48xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x48xbf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x48xbf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x?x48xbf16>
  %b = linalg.broadcast ins(%w : tensor<48xbf16>) outs(%e : tensor<?x?x48xbf16>)
      dimensions = [0, 1]
  %m = arith.mulf %x, %b : tensor<?x?x48xbf16>
  return %m : tensor<?x?x48xbf16>
}
"""
MASK = """
#out = affine_map<(d0, d1) -> (d0, d1)>
func.func @f(%e: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.0 : f32
  %r = linalg.generic {indexing_maps = [#out], iterator_types = ["parallel", "parallel"]}
      outs(%e : tensor<?x?xf32>) {
  ^bb0(%o: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %c = arith.cmpi ule, %j, %i : index
    %v = arith.select %c, %zero, %ninf : f32
    linalg.yield %v : f32
  } -> tensor<?x?xf32>
  return %r : tensor<?x?xf32>
}
"""
REDUCTION = """
#in = affine_map<(d0, d1) -> (d0, d1)>
#out = affine_map<(d0, d1) -> (d0)>
func.func @f(%x: tensor<4x8xf32>, %e: tensor<4xf32>) -> tensor<4xf32> {
  %r = linalg.generic {indexing_maps = [#in, #out], iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %o : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
}
"""


@dataclass
class Built:
    infos: dict[str, KernelInfo]
    ptx: str
    nvvm: str
    usage: str

    def kernel_ptx(self, key: str) -> str:
        name = self.infos[key].name
        match = re.search(rf"\.entry {name}\((.*?)\n}}\n", self.ptx, re.S)
        assert match, f"no PTX for {name}"
        return match.group(1)


@pytest.fixture(scope="module", params=ARCHS)
def built(request: pytest.FixtureRequest) -> Built:
    """One module per arch holding every kernel the tests look at, lowered and assembled."""
    arch = request.param
    context = make_context()
    infos: dict[str, KernelInfo] = {}
    modules = []
    with context, ir.Location.unknown():
        km = KernelModule(arch)
        infos["rms_2048"] = build_rms_norm(km, RmsNormConfig("bf16", 2048, 1e-6))
        infos["rms_36"] = build_rms_norm(km, RmsNormConfig("bf16", 36, 1e-6))
        infos["rms_res"] = build_rms_norm(km, RmsNormConfig("f16", 2304, 1e-6, residual=True))
        infos["rms_77"] = build_rms_norm(km, RmsNormConfig("f32", 77, 1e-5, 0.0))
        infos["rope"] = build_rope(km, RopeConfig("bf16", 8, 256, 10000.0))
        infos["rope_partial"] = build_rope(km, RopeConfig("f32", 3, 24, 1e4, rotary_dim=16))
        infos["lookup"] = build_lookup(km, LookupConfig("bf16", 256000, 2048, scale=45.25))
        infos["lookup_copy"] = build_lookup(km, LookupConfig("f32", 100, 36, "i32"))
        for key, text in (("softcap", SOFTCAP), ("transpose", TRANSPOSE), ("bmul", BROADCAST_MUL)):
            module, generics = generics_from_text(text, context)
            modules.append(module)
            infos[key] = build_elementwise(km, generics[-1])
        module, generics = generics_from_text(MASK, context)
        modules.append(module)
        infos["mask"] = build_elementwise(km, generics[0])
        km.module.operation.verify()
        nvvm = toolchain.to_nvvm(km.module)
        ptx = toolchain.to_ptx(km.module)
    if toolchain.find_ptxas() is None:
        pytest.skip("ptxas not found")
    toolchain.assemble(ptx, arch)
    return Built(infos, ptx, nvvm, toolchain.resource_usage(ptx, arch))


def test_every_kernel_assembles_without_local_memory(built: Built) -> None:
    reports = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores", built.usage)
    assert len(reports) == len({info.name for info in built.infos.values()})
    assert all(frame == "0" and spills == "0" for frame, spills in reports)


# -- RMSNorm -------------------------------------------------------------------------------


def test_row_layouts_for_gemma_and_tiny_widths() -> None:
    # Gemma-2B: 256 vectors of 8 bf16 over 2 warps, 4 each; one row per block.
    layout = row_layout(2048, 2)
    assert (layout.lanes, layout.threads, layout.chunks, layout.rows_per_block) == (8, 64, 4, 1)
    # 2304 = 288 vectors → 3 warps of exactly 3 vectors each.
    assert (row_layout(2304, 2).threads, row_layout(2304, 2).chunks) == (96, 3)
    # D = 36 bf16: 9 vectors of 4 over 4 lanes (the last lane holds 3), 32 rows a block.
    small = row_layout(36, 2)
    assert (small.lanes, small.threads, small.chunks, small.rows_per_block) == (4, 4, 3, 32)
    assert small.chunk_always_in_row(1) and not small.chunk_always_in_row(2)
    # An odd width falls back to scalar accesses.
    assert row_layout(77, 4).lanes == 1


def test_rms_norm_launch_contract(built: Built) -> None:
    info = built.infos["rms_2048"]
    assert [p.name for p in info.params] == ["x", "w", "y", "rows"]
    assert info.params[3].kind == "i32"
    assert info.grid == ("rows", "1", "1") and info.block == (64, 1, 1)
    small = built.infos["rms_36"]
    assert small.grid == ("cdiv(rows, 32)", "1", "1") and small.block == (128, 1, 1)
    residual = built.infos["rms_res"]
    assert [p.name for p in residual.params] == ["x", "r", "w", "y", "s", "rows"]


def test_rms_norm_reads_16_bytes_and_reduces_with_shuffles(built: Built) -> None:
    wide = built.kernel_ptx("rms_2048")
    assert wide.count("ld.global.v4.b32") == 8  # 4 vectors of x, 4 of w
    assert wide.count("st.global.v4.b32") == 4
    assert wide.count("shfl.sync.bfly.b32") == 5 and "bar.sync" in wide
    # 1/sqrt correctly rounded (torch's CPU numerics), never the approximate instructions.
    assert "sqrt.rn.f32" in wide and "rsqrt.approx" not in wide and "sqrt.approx" not in wide
    narrow = built.kernel_ptx("rms_36")
    # 4 bf16 = 8 bytes per access (36 is no multiple of 8), as one instruction.
    assert "ld.global.v2.b32" in narrow or "ld.global.v4.b16" in narrow
    assert narrow.count("shfl.sync.bfly.b32") == 2 and "bar.sync" not in narrow


def test_rms_norm_residual_writes_the_sum(built: Built) -> None:
    body = built.kernel_ptx("rms_res")
    # f16 2304 = 288 vectors over 3 warps: per lane 3 vectors of x, r; s, w, y per vector.
    assert body.count("st.global.v4.b32") == 6
    assert body.count("ld.global.v4.b32") == 9


# -- RoPE ----------------------------------------------------------------------------------


def test_rope_layout_and_launch_contract(built: Built) -> None:
    info = built.infos["rope"]
    assert [p.name for p in info.params] == ["x", "pos", "y", "B", "S"]
    assert [p.kind for p in info.params] == ["buffer", "buffer", "buffer", "i32", "i32"]
    assert info.grid == ("cdiv(B*S*32, 128)", "1", "1")
    layout = rope_layout(RopeConfig("bf16", 8, 256, 10000.0))
    assert (layout.pair_lanes, layout.pairs, layout.heads_per_thread, layout.groups) == (
        8,
        16,
        4,
        2,
    )
    partial = rope_layout(RopeConfig("f32", 3, 24, 1e4, rotary_dim=16))
    assert (partial.pairs, partial.copies, partial.copy_lanes) == (2, 2, 4)


def test_rope_frequencies_are_torchs(built: Built) -> None:
    values = inverse_frequencies(10000.0, 256, 1.0)
    table = built.infos["rope"].name + "_inv_freq"
    match = re.search(rf"\.global \.align 16 \.b8 {table}\[(\d+)\]", built.ptx)
    assert match and int(match.group(1)) == 4 * len(values)
    # The table holds the same f32 values as the CPU path's (bit for bit in the IR).
    assert "3.1622776" in built.nvvm or f"{values[64]:.6e}"[:6] in built.nvvm


def test_rope_moves_16_bytes_and_rotates_without_fma(built: Built) -> None:
    body = built.kernel_ptx("rope")
    # 4 heads × 2 halves loaded and stored per thread.
    assert body.count("ld.global.v4.b32") >= 8 and body.count("st.global.v4.b32") == 8
    partial = built.kernel_ptx("rope_partial")
    rotate = partial[partial.index("st.global") - 400 : partial.index("st.global")]
    assert "fma.rn" not in rotate  # products rounded separately, as torch's q*cos + rot*sin


# -- lookup --------------------------------------------------------------------------------


def test_lookup_launch_contract_and_scale(built: Built) -> None:
    info = built.infos["lookup"]
    assert [p.name for p in info.params] == ["table", "ids", "y", "n"]
    assert info.params[1].dtype == "i64" and info.grid == ("n", "1", "1")
    assert built.infos["lookup_copy"].params[1].dtype == "i32"
    assert rounded_scale(2048**0.5, "bf16") == 45.25
    assert rounded_scale(45.25, "bf16") == 45.25
    body = built.kernel_ptx("lookup")
    assert body.count("ld.global.v4.b32") == 4 and body.count("st.global.v4.b32") == 4
    copy = built.kernel_ptx("lookup_copy")
    assert "mul.rn.f32" not in copy  # a scale of 1 copies bits


# -- elementwise ---------------------------------------------------------------------------


def _plan(text: str) -> object:
    context = make_context()
    module, generics = generics_from_text(text, context)
    with context:
        plan = plan_elementwise(generics[-1])
    del module
    return plan


def test_softcap_chain_fuses_into_one_vectorised_generic(built: Built) -> None:
    context = make_context()
    module, generics = generics_from_text(SOFTCAP, context)
    assert len(generics) == 1 and module is not None
    info = built.infos["softcap"]
    assert [p.name for p in info.params] == ["in0", "out", "d0", "d1"]
    assert [p.kind for p in info.params] == ["buffer", "buffer", "i64", "i64"]
    assert info.grid == ("cdiv(d0*d1*32, 256)", "1", "1")
    body = built.kernel_ptx("softcap")
    assert body.count("ld.global.v4.b32") == 1 and body.count("st.global.v4.b32") == 1
    assert "div.u32" not in body and "div.u64" not in body  # one contiguous group
    assert body.count("div.rn.f32") == 8


def test_transpose_keeps_its_innermost_dim_vectorised(built: Built) -> None:
    plan = _plan(TRANSPOSE)
    assert plan.sizes == (None, 4, None, 24) and plan.lanes == 8  # type: ignore[attr-defined]
    info = built.infos["transpose"]
    assert [p.name for p in info.params] == ["in0", "out", "d0", "d2"]
    assert info.grid == ("cdiv(d0*d2*12, 256)", "1", "1")
    body = built.kernel_ptx("transpose")
    assert body.count("ld.global.v4.b32") == 1 and body.count("div.u32") == 1


def test_broadcast_operand_groups_the_dims_it_skips(built: Built) -> None:
    plan = _plan(BROADCAST_MUL)
    assert plan.groups == ((0, 1), (2,)) and plan.lanes == 8  # type: ignore[attr-defined]
    body = built.kernel_ptx("bmul")
    assert body.count("ld.global.v4.b32") == 2 and "div.u32" not in body


def test_linalg_index_reads_every_loop_dim(built: Built) -> None:
    plan = _plan(MASK)
    assert plan.groups == ((0,), (1,)) and plan.lanes == 1  # type: ignore[attr-defined]
    assert [p.name for p in built.infos["mask"].params] == ["out", "d0", "d1"]


def test_same_computation_is_one_kernel() -> None:
    context = make_context()
    kept_first, first = generics_from_text(SOFTCAP, context)  # the modules own the ops
    kept_second, second = generics_from_text(SOFTCAP, context)
    with context, ir.Location.unknown():
        km = KernelModule("sm_90a")
        a = build_elementwise(km, first[0])
        b = build_elementwise(km, second[0])
    assert a == b
    del kept_first, kept_second


def test_reductions_are_refused_by_name() -> None:
    context = make_context()
    module, generics = generics_from_text(REDUCTION, context)
    with context, pytest.raises(ElementwiseError, match="non-parallel iterators"):
        plan_elementwise(generics[0])
    del module
