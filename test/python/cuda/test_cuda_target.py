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
from tessera.errors import LoweringError
from tessera.models.tiny import tiny_gemma
from tessera.runtime import expr, kv_layout

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


def test_attention_and_the_cache_read_the_projections_without_transposes(cache: Path) -> None:
    compiled = tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda:sm_90a")
    plan = compiled.ir("plan")
    layers = compiled.ir("mid").count('"tessera.attention.flash"')
    # The forward function's flash attentions, and each cache function's appends and paged
    # attentions (prefill_kv, decode, decode_greedy).
    assert layers == 3 and plan.count('tessera.layout = "bshd"') == layers * 7
    # No kernel is left that only swaps the head and sequence axes.
    assert "affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>" not in plan


@pytest.mark.parametrize("program_name", ["prefill", "prefill_kv", "decode", "decode_greedy"])
def test_every_step_is_a_launch_over_planned_buffers(cache: Path, program_name: str) -> None:
    compiled = tessera.compile(tiny_gemma("gemma3-gqa"), target="cuda:sm_90a")
    program = compiled.manifest.program(program_name)
    # Sizes for every symbol a program names (batch, tokens, block-table widths, pool sizes).
    env = {s.name: 3 + 7 * i for i, s in enumerate(program.symbols)}
    arena = expr.evaluate(program.arena, env)
    names = {b.name for b in program.buffers}
    for buffer in program.buffers:
        if buffer.kind == "arena":
            offset = expr.evaluate(buffer.offset, env)
            size = expr.evaluate(buffer.bytes, env)
            assert offset % 256 == 0 and offset + size <= arena, buffer
    single = {**env, "B": 1}
    paged = {"single": 0, "several": 0}
    for step in program.steps:
        assert step.kind == "launch"
        grid = [expr.evaluate(g, env) for g in step.grid]
        single_grid = [expr.evaluate(g, single) for g in step.grid]
        if program_name.startswith("decode") and step.kernel.startswith("tessera_paged_"):
            # So is its paged attention: a split layout for a batch of one, one for more.
            assert (min(grid) >= 1) != (min(single_grid) >= 1), step.kernel
            paged["single" if min(single_grid) >= 1 else "several"] += 1
        elif program_name.startswith("decode") and step.kernel.startswith(("gemm_", "greedy_")):
            # The decode step's GEMVs come in two builds: the 1-row one launches for a batch
            # of one, the other for larger batches.
            assert (min(grid) >= 1) != (min(single_grid) >= 1), step.kernel
            if not step.kernel.startswith("greedy_combine"):
                assert (min(single_grid) >= 1) == ("_r1c" in step.kernel), step.kernel
        else:
            assert min(grid) >= 1 and min(single_grid) >= 1, step.kernel
        for arg in step.args:
            if arg.kind == "buffer":
                assert arg.name in names
    if program_name.startswith("decode"):
        assert paged["single"] == paged["several"] > 0
    assert "arena bytes" in compiled.memory_plan()


def test_generation_programs_take_the_cache_as_state(cache: Path) -> None:
    model = tiny_gemma("gemma3-gqa")
    compiled = tessera.compile(model, target="cuda:sm_90a")
    manifest = compiled.manifest
    assert [p.name for p in manifest.programs] == [
        "prefill",
        "prefill_kv",
        "decode",
        "decode_greedy",
    ]
    layout = kv_layout.KvLayout.from_json(manifest.metadata[kv_layout.METADATA_KEY])
    cached = {name for layer in layout.layers for name in (layer.k, layer.v)}
    kernels: dict[str, set[str]] = {}
    for name in ("prefill_kv", "decode", "decode_greedy"):
        program = manifest.program(name)
        state = {b.name for b in program.buffers if b.kind == "state"}
        assert state == cached
        kernels[name] = {step.kernel for step in program.steps}
        # Gemma 3's q/k norms, ropes and cache append are one launch (rope_append.py).
        appends = [k for k in kernels[name] if k.startswith("tessera_rope_append")]
        paged = [k for k in kernels[name] if k.startswith("tessera_paged_attention")]
        assert appends and paged, kernels[name]
        separate = ("tessera_kv_append", "tessera_rope_", "tessera_rope2_")
        assert not [k for k in kernels[name] if k.startswith(separate) and k not in appends]
    # The programs share one kernel module: decode's kernels are prefill_kv's (other sizes,
    # same signatures), except elementwise ones specialised to decode's single token, the
    # GEMMs, which are bandwidth-bound GEMVs for a step's few rows, and the paged attention
    # built for a batch of one.
    gemms = {k for k in kernels["decode"] if k.startswith("gemm_")}
    assert gemms and all(k.startswith("gemm_gemv_") for k in gemms)
    shared = {k for k in kernels["decode"] - gemms if not k.startswith("tessera_elementwise")}
    # The paged attention's batch-of-one build (its own split layout) is decode's alone.
    own = {k for k in shared - kernels["prefill_kv"] if k.startswith("tessera_paged_")}
    assert own and shared - own <= kernels["prefill_kv"]
    assert any(k.startswith("tessera_paged_") for k in shared - own)
    # Each GEMV of a step has a 1-row build (a batch of one) and an 8-row one.
    for rows in ("r1", "r8"):
        assert any(f"_{rows}c" in k for k in gemms), gemms
    # The greedy step is the decode step but for its LM head: GEMVs choosing the token (and
    # the combine of their blocks' choices) where decode's head GEMVs write the logits.
    head = sorted(k for k in kernels["decode_greedy"] if k.startswith("greedy_head_"))
    assert [k.split("_nk_")[1][:3] for k in head] == ["r1c", "r8c"], head
    combines = {k for k in kernels["decode_greedy"] if k.startswith("greedy_combine_")}
    assert combines and kernels["decode_greedy"] - kernels["decode"] == {*head, *combines}
    greedy = manifest.program("decode_greedy")
    assert [(o.name, o.dtype, o.shape) for o in greedy.outputs] == [("tokens", "i64", ("B", 1))]
    # The cache's size comes from the manifest, as on the CPU (no GPU needed to ask).
    cpu = tessera.compile(model)
    assert compiled.cache_memory(2, 100) == cpu.cache_memory(2, 100) > 0


def test_rocm_builds_the_generation_programs_too(cache: Path) -> None:
    compiled = tessera.compile(tiny_gemma("gemma3-gqa"), target="rocm:gfx942")
    assert [p.name for p in compiled.manifest.programs] == ["prefill", "prefill_kv", "decode"]
    kernels = {step.kernel for step in compiled.manifest.program("decode").steps}
    assert any(k.startswith("tessera_paged_attention") for k in kernels)
    assert compiled.cache_memory(1, 10) > 0


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


def test_an_unfused_reduction_is_a_located_error(cache: Path) -> None:
    """A matmul the front end leaves as a generic with a reduction has no GPU kernel: the
    error is a LoweringError at the model's source line, not one from the kernel generator."""

    class Bidirectional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(32, 16)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(input_ids)
            q = x.view(x.shape[0], x.shape[1], 1, 16).transpose(1, 2)
            o = torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return o.transpose(1, 2).reshape(x.shape) @ self.embed.weight.T

    with pytest.raises(LoweringError, match=r"no GPU kernel for this linalg\.generic"):
        tessera.compile(Bidirectional(), target="cuda:sm_90a")


def test_hopper_projections_read_through_tensor_maps(cache: Path) -> None:
    """On sm_90a every GEMM of the prefill programs (the projections, the LM head, the
    MLP's gated gate/up GEMM and its down projection) runs the wgmma GEMM, whose x and w
    reach it as TMA tensor maps (the untuned warp-specialized tiles: boxes of 256 w rows, or
    128 gated, next to 128 x rows); the decode step keeps
    its GEMVs, and sm_90 and f32 keep the mma.sync family. The manifest carries the maps
    through JSON, and refuses one that maps an output."""
    compiled = tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda:sm_90a")
    manifest = compiled.manifest
    for name in ("prefill", "prefill_kv"):
        gemms = [s for s in manifest.program(name).steps if s.kernel.startswith("gemm_")]
        assert gemms and all(s.kernel.startswith("gemm_wgmma_") for s in gemms), name
        for step in gemms:
            maps = [a for a in step.args if isinstance(a, runtime.TensorMapArg)]
            gated = "_gelu_tanh_" in step.kernel
            rows = 128 if gated else 256
            assert [(m.box, m.of.kind) for m in maps[1:]] == [((rows, 64), "weight")] * (
                len(maps) - 1
            )
            assert len(maps) == (3 if gated else 2)
            assert maps[0].box == (128, 64) and maps[0].of.kind in ("buffer", "input")
    decode = manifest.program("decode").steps
    assert not any(s.kernel.startswith("gemm_wgmma_") for s in decode)
    for target, dtype in (("cuda:sm_90", torch.bfloat16), ("cuda:sm_90a", torch.float32)):
        other = tessera.compile(tiny_gemma("gemma2-gqa", dtype=dtype), target=target).manifest
        kernels = {s.kernel for p in other.programs for s in p.steps}
        assert not any(k.startswith("gemm_wgmma_") for k in kernels), target

    data = json.loads(json.dumps(manifest.to_json()))
    assert runtime.parse_manifest(data) == manifest
    steps = data["programs"]["prefill"]["steps"]
    at = next(
        (i, j)
        for i, step in enumerate(steps)
        for j, arg in enumerate(step["args"])
        if arg["kind"] == "tensormap"
    )
    steps[at[0]]["args"][at[1]]["of"] = {"kind": "output", "name": "logits"}
    with pytest.raises(runtime.ArtifactError, match=r"a tensor map is read from"):
        runtime.parse_manifest(data)


def _kernel_bodies(ptx: str) -> dict[str, str]:
    """Each ``.entry`` of ``ptx`` by name, with its body."""
    parts = ptx.split(".entry ")[1:]
    return {part.split("(", 1)[0]: part for part in parts}


def test_hopper_kernels_may_start_before_the_previous_one_ends(cache: Path) -> None:
    """On sm_90 every kernel signals the next one's launch at its top and waits for the ones
    before it before it touches memory, except that the one-row decode GEMVs (projections,
    MLP, greedy head) load weights first; the manifest marks every launch programmatic. sm_80 has
    no such launch: neither the instructions nor the marks."""
    compiled = tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda:sm_90a")
    bodies = _kernel_bodies(compiled.ir("ptx"))
    for name, body in bodies.items():
        # one wait a block: a sibling GEMV's block waits in the branch of its own GEMV
        waits = body.count("griddepcontrol.wait;")
        parts = name.count("_n") if "_siblings_" in name and "_early" in name else 1
        assert waits == parts, name
        assert body.count("griddepcontrol.launch_dependents;") == 1, name
        first_access = min(
            body.find(op)
            for op in ("ld.global", "st.global", "cp.async.ca", "cp.async.cg")
            if op in body
        )
        wait = body.index("griddepcontrol.wait;")
        if "_early" in name:
            assert first_access < wait and "st.global" not in body[:wait], name
        else:
            assert wait < first_access, name
    assert any("_siblings_" in n for n in bodies)
    gemvs = [
        step.kernel
        for program in ("decode", "decode_greedy")
        for step in compiled.manifest.program(program).steps
        if step.kernel.startswith(("gemm_gemv", "greedy_head"))
    ]
    assert any(k.startswith("greedy_head") for k in gemvs)
    one_row = [k for k in gemvs if "_r1c" in k]
    assert one_row and all("_early" in k for k in one_row), one_row
    assert not any("_early" in k for k in gemvs if k not in one_row)
    for program in compiled.manifest.programs:
        assert all(step.programmatic for step in program.steps), program.name
    data = json.loads((compiled.directory / "manifest.json").read_text())
    assert data["programs"]["decode"]["steps"][0]["programmatic"] is True
    data["programs"]["decode"]["steps"][0]["programmatic"] = 1
    with pytest.raises(runtime.ArtifactError, match=r"steps\[0\]\.programmatic: expected bool"):
        runtime.parse_manifest(data)

    older = tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda:sm_80")
    assert "griddepcontrol" not in older.ir("ptx") and "_early" not in older.ir("ptx")
    assert not any(s.programmatic for p in older.manifest.programs for s in p.steps)
    text = (older.directory / "manifest.json").read_text()
    assert '"programmatic"' not in text
