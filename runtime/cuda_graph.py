"""The decode step as a CUDA graph: one replay instead of one launch per kernel.

A decode step is dozens of small launches (a few per layer), each only microseconds of work at
batch 1, so the time between launches dominates. ``GraphedProgram`` wraps a ``CudaProgram``
with state (the decode program) and, per input shape (batch and block-table widths), captures
one call as a CUDA graph; later calls with that shape copy their inputs into the captured
input tensors and replay it. The graph holds the addresses of the arena, the weights and the
state tensors, so binding other state (another generation's cache) drops the graphs.

The outputs of a replay are the captured output tensors, overwritten by the next replay: the
generation loop reads each step's logits before it runs the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .cuda import CudaProgram

_Replay = Callable[[], tuple[torch.Tensor, ...]]


class GraphedProgram:
    """``program`` run through a CUDA graph per input shape (see the module's docstring)."""

    def __init__(self, program: CudaProgram, device: torch.device | None = None) -> None:
        self.program = program
        # Where the captured input tensors live (None: the current CUDA device, found at the
        # first capture).
        self._device = device
        self._graphs: dict[tuple[tuple[int, ...], ...], tuple[list[torch.Tensor], _Replay]] = {}

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def captured_shapes(self) -> int:
        """How many input shapes have a captured graph."""
        return len(self._graphs)

    def bind_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._graphs.clear()
        self.program.bind_state(tensors)

    @property
    def bound_state(self) -> Mapping[str, torch.Tensor] | None:
        return self.program.bound_state

    def unbind_state(self) -> None:
        self._graphs.clear()
        self.program.unbind_state()

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ordered = list(inputs) or [named[spec.name] for spec in self.program.spec.inputs]
        key = tuple(tuple(t.shape) for t in ordered)
        captured = self._graphs.get(key)
        if captured is None:
            # The first call of a shape runs the checks and a warm-up call inside ``graph``,
            # then the replay runs it again: a decode step is idempotent (it appends the
            # same keys to the same slots and reads the same cache).
            if self._device is None:
                self._device = torch.device("cuda", torch.cuda.current_device())
            static = [t.to(self._device, copy=True) for t in ordered]
            replay = self.program.graph(*static)
            self._graphs[key] = (static, replay)
            return replay()
        static, replay = captured
        for target, source in zip(static, ordered, strict=True):
            target.copy_(source, non_blocking=True)
        return replay()
