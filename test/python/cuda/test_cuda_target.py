"""The CUDA target on a machine without a GPU: whole models compile to kernel launches, the
kernels assemble for sm_80 and sm_90a, the manifest's plan is consistent, and running says
plainly that no GPU is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tessera
from tessera import runtime
from tessera.models.tiny import tiny_gemma
from tessera.runtime import expr

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_model_compiles_to_launches_for_each_arch(cache: Path, arch: str) -> None:
    model = tiny_gemma("gemma2-gqa", dtype=torch.bfloat16)
    compiled = tessera.compile(model, target=f"cuda:{arch}")
    assert compiled.stages == ("high", "mid", "plan", "gpu", "nvvm", "ptx")
    assert "gpu.func" in compiled.ir("gpu") and "llvm.func" in compiled.ir("nvvm")
    assert f".target {arch}" in compiled.ir("ptx")
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in compiled.ir("ptx")
    assert "cp.async" in compiled.ir("ptx")
    manifest = json.loads((compiled.directory / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["target"] == {
        "kind": "cuda",
        "arch": arch,
        "os": "any",
    }
    kinds = {b["kind"] for b in manifest["binaries"].values()}
    assert kinds == {"cubin", "ptx"}
    cubin = (compiled.directory / "kernels.cubin").read_bytes()
    assert cubin.startswith(b"\x7fELF")


def test_attention_reads_the_projections_without_transposes(cache: Path) -> None:
    compiled = tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda")
    plan = compiled.ir("plan")
    layers = compiled.ir("mid").count('"tessera.attention.flash"')
    assert layers == 3 and plan.count('tessera.layout = "bshd"') == layers
    # No kernel is left that only swaps the head and sequence axes.
    assert "affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>" not in plan


def test_every_step_is_a_launch_over_planned_buffers(cache: Path) -> None:
    compiled = tessera.compile(tiny_gemma("gemma3-gqa"), target="cuda:sm_90a")
    program = compiled.manifest.program("prefill")
    env = {"B": 3, "S": 77}
    arena = expr.evaluate(program.arena, env)
    names = {b.name for b in program.buffers}
    for buffer in program.buffers:
        if buffer.kind == "arena":
            offset = expr.evaluate(buffer.offset, env)
            size = expr.evaluate(buffer.bytes, env)
            assert offset % 256 == 0 and offset + size <= arena
    for step in program.steps:
        assert step.kind == "launch"
        grid = [expr.evaluate(g, env) for g in step.grid]
        assert all(g >= 1 for g in grid)
        for arg in step.args:
            if arg.kind == "buffer":
                assert arg.name in names
    assert "arena bytes" in compiled.memory_plan()


def test_calling_without_a_gpu_says_so(cache: Path, tmp_path: Path) -> None:
    compiled = tessera.compile(tiny_gemma("gemma1-mqa"), target="cuda:sm_90a")
    with pytest.raises(tessera.TesseraError, match="no CUDA device is present"):
        compiled(torch.zeros(1, 4, dtype=torch.int64))
    saved = compiled.save(tmp_path / "artifact")
    with pytest.raises(runtime.ArtifactError, match="no CUDA device is present"):
        runtime.load(saved)


def test_unknown_target_and_arch_are_refused(cache: Path) -> None:
    model = tiny_gemma("gemma1-mqa")
    with pytest.raises(tessera.TesseraError, match="unknown target 'tpu'"):
        tessera.compile(model, target="tpu")
    with pytest.raises(tessera.TesseraError, match="unknown CUDA arch 'sm_12'"):
        tessera.compile(model, target="cuda:sm_12")


def test_auto_picks_the_cpu_without_a_gpu(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compiled = tessera.compile(tiny_gemma("gemma1-mqa"), target="auto")
    assert compiled.target == "cpu"
    assert "target cpu (no CUDA device is present)" in capsys.readouterr().err
