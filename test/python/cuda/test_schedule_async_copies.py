"""tessera-schedule-async-copies on its own: the stage layout, the schedule it writes (prologue
groups, wait counts, predicated tail), what it refuses, and that its output lowers to PTX
with the matching cp.async group discipline. The lit test holds the IR text checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlir import ir

from tessera.context import make_context, parse_module
from tessera.errors import PassError
from tessera.ir_walk import walk_ops
from tessera.lowering.cuda import toolchain
from tessera.lowering.cuda.pipeline_match import match_pipeline_loop
from tessera.lowering.cuda.pipeline_smem import plan_ring
from tessera.lowering.cuda.schedule_async_copies import Options, schedule_async_copies

LIT = Path(__file__).parents[2] / "lit" / "lowering" / "cuda" / "tessera-schedule-async-copies.mlir"


def chunk(name: str) -> str:
    """The ``// -----`` chunk of the lit test that defines ``@name``, in a module whose GPU
    module targets sm_80 (so it can be lowered to PTX)."""
    for text in LIT.read_text().split("// -----"):
        if f"@{name}(" in text:
            text = text.replace(
                "gpu.module @kernels {", 'gpu.module @kernels [#nvvm.target<chip = "sm_80">] {'
            )
            return text
    raise KeyError(name)


def ops_named(module: ir.Module, name: str) -> list[ir.Operation]:
    return [op for op in walk_ops(module.operation) if op.name == name]


def pipelined(name: str, stages: int) -> ir.Module:
    module = parse_module(chunk(name), make_context())
    with module.context:
        schedule_async_copies(module.operation, Options(stages=stages))
    return module


def smem_bytes(module: ir.Module) -> int:
    (function,) = ops_named(module, "gpu.func")
    return ir.IntegerAttr(function.attributes["tessera.smem_bytes"]).value


def test_ring_layout_moves_the_views_above_the_stages() -> None:
    module = parse_module(chunk("two_buffers"), make_context())
    (loop,) = ops_named(module, "scf.for")
    found = match_pipeline_loop(loop)
    assert [(s.offset, s.size) for s in found.staged] == [(0, 4096), (4096, 4096)]
    assert found.trailing_barrier is not None
    layout = plan_ring(found, 3)
    assert layout.span == 8192 and layout.ring == (0, 24576)
    assert layout.shift == 16384 and layout.total == 28672
    assert [v.begin for v in layout.moved] == [8192]


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_schedule_shape(stages: int) -> None:
    module = pipelined("two_buffers", stages)
    (loop,) = ops_named(module, "scf.for")
    groups = ops_named(module, "nvgpu.device_async_create_group")
    waits = ops_named(module, "nvgpu.device_async_wait")
    # one group per prologue stage and one per iteration; a wait inside and one after the loop
    assert len(groups) == stages
    counts = sorted(ir.IntegerAttr(w.attributes["numGroups"]).value for w in waits)
    assert counts == sorted([stages - 2, 0])
    assert ir.IntegerAttr(loop.attributes["tessera.pipeline_stages"]).value == stages
    assert "tessera.pipeline" not in [str(a) for a in loop.attributes]
    # the loop keeps one barrier (the trailing one goes); one more follows the loop
    barriers_inside = [op for op in walk_ops(loop) if op.name == "gpu.barrier"]
    assert len(barriers_inside) == 1
    assert smem_bytes(module) == stages * 8192 + 4096


def test_one_stage_leaves_the_loop_alone() -> None:
    before = str(parse_module(chunk("two_buffers"), make_context()))
    assert str(pipelined("two_buffers", 1)) == before


def test_pipelined_loop_lowers_to_a_cp_async_schedule() -> None:
    module = pipelined("two_buffers", 3)
    with module.context:
        toolchain.to_nvvm(module)
        ptx = toolchain.to_ptx(module)
    # two prologue commits before the loop, then wait(1), barrier, copies, commit in it
    prologue, loop = ptx.split("cp.async.wait_group", 1)
    assert prologue.count("cp.async.commit_group") == 2
    assert re.match(r"\s*1;\s*bar\.sync\s*0;", loop)
    assert "cp.async.wait_group \t0;" in ptx.replace("    ", "\t") or re.search(
        r"cp\.async\.wait_group\s+0;", ptx
    )
    toolchain.assemble(ptx, "sm_80")


def test_refusals_name_the_problem() -> None:
    with pytest.raises(PassError, match="depends on a loop-carried value"):
        pipelined("copy_depends_on_carried_value", 3)
    with pytest.raises(PassError, match=r"found a buffer defined by memref\.alloca"):
        pipelined("copy_into_static_buffer", 3)
    with pytest.raises(PassError, match=r"found 2 and 1"):
        pipelined("two_groups", 3)


def test_unmarked_loops_are_untouched() -> None:
    before = str(parse_module(chunk("unmarked_loop_untouched"), make_context()))
    assert str(pipelined("unmarked_loop_untouched", 3)) == before


def test_gemm_generator_goes_through_the_pass() -> None:
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemmTile, build_gemm

    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_80")
        info = build_gemm(km, GemmConfig("bf16", 256, 256, tile=GemmTile(stages=3)))
        (loop,) = [op for op in walk_ops(km.module.operation) if op.name == "scf.for"]
        assert ir.IntegerAttr(loop.attributes["tessera.pipeline_stages"]).value == 3
        assert info.smem_bytes == 3 * 2 * 128 * 32 * 2
