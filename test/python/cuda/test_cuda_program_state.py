"""``CudaProgram``'s state buffers (a KV cache), checked without a GPU: a program built over a
stand-in module (its kernels are never launched here) refuses calls until state is bound,
refuses state on the wrong device or of the wrong shape with the buffer named, and reports
what is bound. The CUDA-target artifacts' own manifests are used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tessera
from tessera.errors import RuntimeInputError
from tessera.models.tiny import tiny_gemma
from tessera.runtime import kv_layout
from tessera.runtime.cuda import CudaProgram
from tessera.runtime.generate import cached_programs

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


class _Module:
    """Stands in for a loaded cubin: hands out kernel names, launches nothing."""

    def function(self, name: str) -> str:
        return name


@pytest.fixture(scope="module")
def decode() -> CudaProgram:
    model = tiny_gemma("gemma2-gqa")
    directory: Path = tessera.compile(model, target="cuda:sm_90a").directory
    spec = tessera.runtime.read_manifest(directory).program(kv_layout.DECODE_PROGRAM)
    program = CudaProgram(spec, {"kernels": _Module()})  # type: ignore[dict-item]
    program.share_weights(dict(model.state_dict()))
    return program


def _state(program: CudaProgram, blocks: int = 4) -> dict[str, torch.Tensor]:
    state = {}
    for spec in program.spec.buffers:
        if spec.kind == "state":
            shape = [blocks, *(int(d) for d in spec.shape[1:])]
            state[spec.name] = torch.zeros(shape)
    return state


def test_calls_wait_for_state(decode: CudaProgram) -> None:
    assert decode.bound_state is None
    with pytest.raises(RuntimeInputError, match=r"reads and writes state buffers .*bind_state"):
        decode(torch.zeros(1, 1, dtype=torch.int64))


def test_state_must_be_on_the_gpu(decode: CudaProgram) -> None:
    with pytest.raises(RuntimeInputError, match=r"state 'kv\.0\.k' .* is on cpu; .* cuda"):
        decode.bind_state(_state(decode))
    assert decode.bound_state is None


def test_missing_state_is_named(decode: CudaProgram) -> None:
    state = _state(decode)
    del state["kv.1.v"]
    with pytest.raises(RuntimeInputError, match=r"missing state buffers: kv\.1\.v"):
        decode.bind_state(state)


def test_a_cuda_artifact_generates_on_the_gpu(decode: CudaProgram) -> None:
    """The cache of a CUDA artifact's programs is allocated on the GPU, and its size is
    known from the manifest alone."""
    model = tiny_gemma("gemma2-gqa")
    directory = tessera.compile(model, target="cuda:sm_90a").directory
    manifest = tessera.runtime.read_manifest(directory)
    programs = cached_programs(
        manifest, {kv_layout.PREFILL_PROGRAM: decode, kv_layout.DECODE_PROGRAM: decode}
    )
    assert programs.device == "cuda"
    assert {b.name for b in programs.buffers} == set(_state(decode))


def test_programmatic_launch_follows_the_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled model's CUDA programs launch early where the manifest allows, unless
    TESSERA_PROGRAMMATIC_LAUNCH=0 (read when it loads the artifact); a program loaded by the
    runtime alone does."""
    from tessera import runtime

    model = tiny_gemma("gemma2-gqa")
    compiled = tessera.compile(model, target="cuda:sm_90a")
    spec = runtime.read_manifest(compiled.directory).program(kv_layout.DECODE_PROGRAM)
    assert all(step.programmatic for step in spec.steps)
    assert CudaProgram(spec, {"kernels": _Module()}).programmatic_launch  # type: ignore[dict-item]

    loaded = []

    class _Artifact:
        def __init__(self) -> None:
            self.programs = {"decode": CudaProgram(spec, {"kernels": _Module()})}  # type: ignore[dict-item]

        def bind(self, weights: object) -> None:
            loaded.append(weights)

    monkeypatch.setattr(runtime, "load", lambda directory: _Artifact())
    monkeypatch.setenv("TESSERA_PROGRAMMATIC_LAUNCH", "0")
    artifact = compiled._load()
    assert loaded and not artifact.programs["decode"].programmatic_launch
