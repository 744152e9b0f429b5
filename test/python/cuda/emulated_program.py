"""A compiled CUDA artifact's program run without a GPU: every kernel launch executed by the
kernel interpreter (``gpu_interpreter``) over the artifact's own manifest and kernel IR
(``ir/gpu.mlir``).

The executor does what ``runtime/cuda.py`` does: symbols bound from the inputs' (and the state
tensors') shapes, grid/shared-memory/scalar expressions evaluated over them, one arena
(poisoned with all-ones bytes: NaN in every float type) whose buffers are slices at their
planned offsets, weights as given, outputs poisoned. A wrong kernel, a wrong plan (an arena
slice overlapping a live one, a wrong stride or scalar, a slice read before any launch wrote
it), a race or an out-of-bounds access fails with the kernel and step named.

``state`` buffers (a KV cache) are the bound torch tensors themselves, read and written in
place, so that the prefill and decode programs of one generation share them as on a GPU; the
generation loop (``runtime/generate.py``) drives an ``Emulated`` like any stateful program.
The first program to see a state tensor poisons it: a key read before it was written is NaN.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from gpu_interpreter import KINDS, Buffer, Kernel, KernelFault, Storage, kernels_in
from mlir import ir

import tessera
from tessera.context import make_context
from tessera.runtime import expr
from tessera.runtime.manifest import ArgRef, KernelLaunch, ProgramSpec, ScalarArg

# Every state tensor an emulated program has poisoned, shared by all programs: by id, with a
# weak reference that tells a live tensor from a new one given a freed tensor's id.
_POISONED: dict[int, weakref.ref[torch.Tensor]] = {}


def _shared(tensor: torch.Tensor, dtype: str, name: str) -> Buffer:
    """A buffer over ``tensor``'s own bytes (writes land in the tensor)."""
    if not tensor.is_contiguous():
        raise AssertionError(f"state '{name}' must be contiguous")
    data = tensor.view(torch.uint8).reshape(-1).numpy()
    return Buffer(Storage(data, name), KINDS[dtype].name)


@dataclass
class Emulated:
    """One program of a compiled CUDA artifact, run by the interpreter; callable like a loaded
    program (inputs by name, outputs as a tuple), with ``bind_state`` for state buffers."""

    directory: Path
    program: ProgramSpec
    module: ir.Module
    kernels: dict[str, Kernel] = field(default_factory=dict)
    weights: Mapping[str, torch.Tensor] = field(default_factory=dict)
    state: Mapping[str, torch.Tensor] | None = None
    launches: int = 0

    @staticmethod
    def load(directory: Path, program: str = "prefill") -> Emulated:
        manifest = tessera.runtime.read_manifest(directory)
        context = make_context()
        module = ir.Module.parse((directory / "ir" / "gpu.mlir").read_text(), context)
        return Emulated(directory, manifest.program(program), module)

    def share(self, program: str) -> Emulated:
        """Another program of the same artifact, sharing the parsed kernels and the weights."""
        spec = tessera.runtime.read_manifest(self.directory).program(program)
        return Emulated(self.directory, spec, self.module, self.kernels, self.weights)

    def kernel(self, name: str) -> Kernel:
        found = self.kernels.get(name)
        if found is None:
            with self.module.context:
                found = self.kernels[name] = Kernel(kernels_in(self.module)[name])
        return found

    def bind(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.weights = weights

    def bind_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for spec in self.program.buffers:
            if spec.kind != "state":
                continue
            tensor = tensors[spec.name]
            seen = _POISONED.get(id(tensor))
            if seen is None or seen() is not tensor:
                tensor.view(torch.uint8).fill_(0xFF)
                _POISONED[id(tensor)] = weakref.ref(tensor)
        self.state = tensors

    @property
    def bound_state(self) -> Mapping[str, torch.Tensor] | None:
        return self.state

    def unbind_state(self) -> None:
        self.state = None

    def __call__(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.run(inputs, self.weights)
        return tuple(outputs[spec.name] for spec in self.program.outputs)

    def run(
        self, inputs: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        program = self.program
        env: dict[str, int] = {}
        named: dict[tuple[str, str], Buffer] = {}

        def bind_dims(shape: tuple[int | str, ...], sizes: torch.Size, what: str) -> None:
            for dim, size in zip(shape, sizes, strict=True):
                if isinstance(dim, str):
                    assert env.setdefault(dim, size) == size, f"{dim} bound twice ({what})"
                else:
                    assert dim == size, f"{what}: {tuple(sizes)} against {shape}"

        for spec in program.inputs:
            tensor = inputs[spec.name].cpu()
            bind_dims(spec.shape, tensor.shape, spec.name)
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
        for buffer in program.buffers:
            if buffer.kind == "state":
                assert self.state is not None, f"program {program.name}: no state bound"
                tensor = self.state[buffer.name]
                bind_dims(buffer.shape, tensor.shape, buffer.name)
                named["buffer", buffer.name] = _shared(tensor, buffer.dtype, buffer.name)
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
            elif buffer.kind != "state":
                raise AssertionError(f"the emulator has no case for {buffer.kind} buffers")
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
            if min(grid) <= 0:  # a step for other sizes launches nothing, as on the GPU
                continue
            smem = expr.evaluate(step.smem, env)
            try:
                self.kernel(step.kernel).launch(grid, step.block, smem, args)
            except KernelFault as fault:
                raise KernelFault(f"step {index} of {program.name}: {fault}") from fault
            self.launches += 1
        return {name: named["output", name].tensor(shapes[name]) for name in shapes}
