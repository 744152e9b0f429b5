"""Whole models compiled for CUDA, run without a GPU: every kernel launch of the "prefill"
program is executed by the kernel interpreter (``emulated_program.py``) over the artifact's own
manifest and kernel IR, with the weights of ``model.state_dict()``, and the logits are compared
with transformers' forward of the same model, as ``test/gpu/test_gpu_models.py`` does on a GPU.

Bounds (as on the GPU): f32 logits within 1e-3 of the largest logit; bf16 no further from a
float32 run of the same weights than transformers' own bf16 run is (x1.5); greedy next tokens
agree wherever the float32 reference's top-two margin exceeds twice the error measured.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from emulated_program import Emulated
from gpu_interpreter import KernelFault

import tessera
from tessera.models.tiny import tiny_gemma
from tessera.runtime.manifest import ArgRef, ProgramSpec

TORCH = {"f32": torch.float32, "bf16": torch.bfloat16}


def _vocab(model: torch.nn.Module) -> int:
    config: Any = model.config
    return int(config.vocab_size)


def _max_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max())


# Hopper without its arch-specific instructions (sm_90a adds the wgmma GEMM).
EMULATED_TARGET = "cuda:sm_90"


@functools.cache
def compiled_model(name: str, dtype: str) -> tuple[torch.nn.Module, Path]:
    """The tiny model ``name`` in ``dtype`` and its sm_90 artifact (once per session): the
    kernel interpreter runs no wgmma or TMA, so sm_90a's Hopper GEMM is checked on a GPU
    (test/gpu/check_gemm.py, test/gpu/test_gpu_models.py) instead."""
    model = tiny_gemma(name, dtype=TORCH[dtype])
    return model, tessera.compile(model, target=EMULATED_TARGET).directory


def check_model(name: str, dtype: str, batch: int, length: int) -> str:
    """Emulates the prefill of ``name`` in ``dtype`` on seeded ids and checks the logits
    against transformers; returns a one-line summary."""
    started = time.perf_counter()
    model, directory = compiled_model(name, dtype)
    compiled_at = time.perf_counter()
    emulated = Emulated.load(directory)
    vocab = _vocab(model)
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    (ours,) = emulated.run({"input_ids": ids}, dict(model.state_dict())).values()
    ran_at = time.perf_counter()
    reference32 = tiny_gemma(name, dtype=torch.float32)
    with torch.no_grad():
        theirs = model(ids).logits
        ref = reference32(ids).logits
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert not torch.isnan(ours.float()).any(), f"{name} {dtype}: NaN in the logits"
    scale = float(ref.abs().max())
    error = _max_error(ours, ref) / scale
    if dtype == "f32":
        bound = 1e-3
    else:
        bound = 1.5 * _max_error(theirs, ref) / scale
    top2 = ref.topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > 2 * error * scale
    agree = (ours.float().argmax(-1) == ref.argmax(-1)) | ~decided
    line = (
        f"{name} {dtype} B{batch} S{length}: error {error:.2e} (bound {bound:.2e}), greedy "
        f"agree {int(agree.sum())}/{agree.numel()}; compile {compiled_at - started:.1f} s, "
        f"emulate {ran_at - compiled_at:.1f} s ({len(emulated.program.steps)} launches)"
    )
    print(line)
    assert error <= bound and bool(agree.all()), line
    return line


slow = pytest.mark.slow


# Batch 1 and 9 tokens: every kernel, with Gemma 2's window of 6 cutting into the sequence;
# the GPU suite's shapes (several query and key tiles, two sequences) are slow here.
@pytest.mark.parametrize(
    ("name", "dtype", "batch", "length"),
    [
        ("gemma2-gqa", "bf16", 1, 9),
        ("gemma2-gqa", "f32", 1, 9),
        pytest.param("gemma3-mqa-odd", "bf16", 1, 9, marks=slow),
        pytest.param("gemma3-mqa-odd", "f32", 1, 9, marks=slow),
        pytest.param("gemma1-mqa", "f32", 1, 9, marks=slow),
        pytest.param("gemma1-mqa", "bf16", 1, 9, marks=slow),
        pytest.param("gemma3-gqa", "bf16", 1, 9, marks=slow),
        pytest.param("gemma3-gqa", "f32", 1, 9, marks=slow),
        pytest.param("gemma1-mha", "bf16", 1, 9, marks=slow),
        pytest.param("gemma2-gqa", "bf16", 2, 37, marks=slow),
        pytest.param("gemma2-gqa", "f32", 1, 130, marks=slow),
        pytest.param("gemma3-gqa", "bf16", 1, 130, marks=slow),
    ],
)
def test_model_matches_transformers(name: str, dtype: str, batch: int, length: int) -> None:
    check_model(name, dtype, batch, length)


def _corrupted(name: str, dtype: str, change: Callable[[ProgramSpec], ProgramSpec]) -> str:
    """Emulates ``name`` with its plan changed; returns how it went wrong ("" if it did not)."""
    model, directory = compiled_model(name, dtype)
    emulated = Emulated.load(directory)
    emulated.program = change(emulated.program)
    ids = torch.randint(0, _vocab(model), (1, 9), generator=torch.Generator().manual_seed(1))
    try:
        (ours,) = emulated.run({"input_ids": ids}, dict(model.state_dict())).values()
    except KernelFault as fault:
        return str(fault)
    with torch.no_grad():
        ref = model(ids).logits
    error = _max_error(ours, ref) / float(ref.abs().max())
    return f"logits off by {error:.3g}" if error > 0.1 or torch.isnan(ours.float()).any() else ""


def test_overlapping_arena_slices_fail() -> None:
    """The first norm's output placed over the residual stream it reads (as a memory plan
    that overlapped two live values would): the residual is lost."""

    def overlap(program: ProgramSpec) -> ProgramSpec:
        norm = next(s for s in program.steps if "rms_norm" in s.kernel)
        source, _, target = (a.name for a in norm.args[:3] if isinstance(a, ArgRef))
        offsets = {b.name: b.offset for b in program.buffers}
        buffers = tuple(
            dataclasses.replace(b, offset=offsets[source]) if b.name == target else b
            for b in program.buffers
        )
        return dataclasses.replace(program, buffers=buffers)

    assert _corrupted("gemma2-gqa", "bf16", overlap)


def test_a_missing_launch_leaves_memory_unwritten() -> None:
    """Without the launch that computes the logits before the final softcap, the softcap
    kernel reads an arena slice nothing has written."""

    def drop(program: ProgramSpec) -> ProgramSpec:
        steps = list(program.steps)
        del steps[-2]
        return dataclasses.replace(program, steps=tuple(steps))

    assert "which nothing has stored yet" in _corrupted("gemma2-gqa", "bf16", drop)
