"""Whole models compiled for CUDA, run without a GPU: every kernel launch of the "prefill"
program is executed by the kernel interpreter (``gpu_interpreter``) over the artifact's own
manifest and kernel IR (``ir/gpu.mlir``), and the logits are compared with transformers'
forward of the same model, as ``test/gpu/test_gpu_models.py`` does on a GPU.

The emulated executor does what ``runtime/cuda.py`` does: symbols bound from the input's
shape, grid/shared-memory/scalar expressions evaluated over them, one arena (poisoned with
all-ones bytes: NaN in every float type) whose buffers are slices at their planned offsets,
weights from ``model.state_dict()``, outputs poisoned. A wrong kernel, a wrong plan (an arena
slice overlapping a live one, a wrong stride or scalar, a slice read before any launch wrote
it), a race or an out-of-bounds access fails here with the kernel and op named.

Bounds (as on the GPU): f32 logits within 1e-3 of the largest logit; bf16 no further from a
float32 run of the same weights than transformers' own bf16 run is (x1.5); greedy next tokens
agree wherever the float32 reference's top-two margin exceeds twice the error measured.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gpu_interpreter import KINDS, Buffer, Kernel, KernelFault, Storage, kernels_in
from mlir import ir

import tessera
from tessera.context import make_context
from tessera.models.tiny import tiny_gemma
from tessera.runtime import expr
from tessera.runtime.manifest import ArgRef, KernelLaunch, ProgramSpec, ScalarArg

TORCH = {"f32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Emulated:
    """A compiled CUDA artifact's program, run by the interpreter."""

    program: ProgramSpec
    module: ir.Module
    kernels: dict[str, Kernel]

    @staticmethod
    def load(directory: Path, program: str = "prefill") -> Emulated:
        manifest = tessera.runtime.read_manifest(directory)
        context = make_context()
        module = ir.Module.parse((directory / "ir" / "gpu.mlir").read_text(), context)
        return Emulated(manifest.program(program), module, {})

    def kernel(self, name: str) -> Kernel:
        found = self.kernels.get(name)
        if found is None:
            with self.module.context:
                found = self.kernels[name] = Kernel(kernels_in(self.module)[name])
        return found

    def __call__(
        self, inputs: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        program = self.program
        env: dict[str, int] = {}
        named: dict[tuple[str, str], Buffer] = {}
        for spec in program.inputs:
            tensor = inputs[spec.name]
            for dim, size in zip(spec.shape, tensor.shape, strict=True):
                if isinstance(dim, str):
                    assert env.setdefault(dim, size) == size, f"{dim} bound twice"
                else:
                    assert dim == size
            named["input", spec.name] = Buffer.of(tensor, spec.dtype, spec.name)
        for spec in program.weights:
            tensor = weights[spec.name]
            assert tuple(tensor.shape) == tuple(spec.shape), spec.name
            named["weight", spec.name] = Buffer.of(tensor, spec.dtype, spec.name)
        shapes = {}
        for spec in program.outputs:
            shape = tuple(d if isinstance(d, int) else expr.evaluate(d, env) for d in spec.shape)
            shapes[spec.name] = shape
            named["output", spec.name] = Buffer.poisoned(math.prod(shape), spec.dtype, spec.name)
        arena_bytes = expr.evaluate(program.arena, env)
        arena = Storage(np.full(arena_bytes, 0xFF, np.uint8), "the arena")
        for buffer in program.buffers:
            if buffer.kind == "arena":
                offset = expr.evaluate(buffer.offset, env)
                size = expr.evaluate(buffer.bytes, env)
                count = size // KINDS[buffer.dtype].size
                label = f"arena slice {buffer.name}"
                named["buffer", buffer.name] = Buffer(
                    arena, buffer.dtype, offset, count, label, unwritten=True
                )
            elif buffer.kind == "constant":
                data = np.frombuffer(bytes.fromhex(buffer.data), dtype=np.uint8).copy()
                named["buffer", buffer.name] = Buffer(Storage(data, buffer.name), buffer.dtype)
            else:
                raise AssertionError(
                    f"the emulator has no case for {buffer.kind} buffers ({buffer.name}); "
                    "prefill programs hold only arena and constant buffers"
                )
        for index, step in enumerate(program.steps):
            assert isinstance(step, KernelLaunch), step
            args: list[Buffer | int | float] = []
            for arg in step.args:
                if isinstance(arg, ScalarArg):
                    value = arg.value
                    args.append(expr.evaluate(value, env) if isinstance(value, str) else value)
                else:
                    assert isinstance(arg, ArgRef)
                    args.append(named[arg.kind, arg.name])
            grid = [expr.evaluate(g, env) for g in step.grid]
            smem = expr.evaluate(step.smem, env)
            try:
                self.kernel(step.kernel).launch(grid, step.block, smem, args)
            except KernelFault as fault:
                raise KernelFault(f"step {index} of {program.name}: {fault}") from fault
        return {name: named["output", name].tensor(shapes[name]) for name in shapes}


def _vocab(model: torch.nn.Module) -> int:
    config: Any = model.config
    return int(config.vocab_size)


def _max_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max())


@functools.cache
def compiled_model(name: str, dtype: str) -> tuple[torch.nn.Module, Path]:
    """The tiny model ``name`` in ``dtype`` and its sm_90a artifact (once per session)."""
    model = tiny_gemma(name, dtype=TORCH[dtype])
    return model, tessera.compile(model, target="cuda:sm_90a").directory


def check_model(name: str, dtype: str, batch: int, length: int) -> str:
    """Emulates the prefill of ``name`` in ``dtype`` on seeded ids and checks the logits
    against transformers; returns a one-line summary."""
    started = time.perf_counter()
    model, directory = compiled_model(name, dtype)
    compiled_at = time.perf_counter()
    emulated = Emulated.load(directory)
    vocab = _vocab(model)
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    (ours,) = emulated({"input_ids": ids}, dict(model.state_dict())).values()
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
        (ours,) = emulated({"input_ids": ids}, dict(model.state_dict())).values()
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
