"""``GraphedProgram``'s bookkeeping, without a GPU: one capture per input shape, later calls
copy their inputs into the captured tensors and replay, and binding other state drops the
graphs (they hold the old state's addresses). A stand-in program plays ``CudaProgram``: its
``graph`` returns a replay that reads the captured inputs when it runs, as a CUDA graph reads
the memory it was captured over."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace

import torch

from tessera.runtime.cuda_graph import GraphedProgram
from tessera.runtime.manifest import TensorSpec


class _Program:
    def __init__(self) -> None:
        # Only the input names (their order) are read.
        self.spec = SimpleNamespace(
            name="decode", inputs=(TensorSpec("a", "f32", (2,)), TensorSpec("b", "f32", (2,)))
        )
        self.captures = 0
        self.state: Mapping[str, torch.Tensor] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def graph(self, *inputs: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
        self.captures += 1
        out = torch.empty_like(inputs[0])

        def replay() -> tuple[torch.Tensor, ...]:
            torch.add(inputs[0], inputs[1], out=out)
            return (out,)

        return replay

    def bind_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.state = tensors

    @property
    def bound_state(self) -> Mapping[str, torch.Tensor] | None:
        return self.state

    def unbind_state(self) -> None:
        self.state = None


def _graphed() -> tuple[_Program, GraphedProgram]:
    program = _Program()
    return program, GraphedProgram(program, device=torch.device("cpu"))  # type: ignore[arg-type]


def test_one_capture_per_shape_and_replays_read_the_new_inputs() -> None:
    program, graphed = _graphed()
    (first,) = graphed(a=torch.tensor([1.0, 2.0]), b=torch.tensor([10.0, 20.0]))
    assert first.tolist() == [11.0, 22.0]
    (second,) = graphed(a=torch.tensor([3.0, 4.0]), b=torch.tensor([30.0, 40.0]))
    assert second.tolist() == [33.0, 44.0]
    assert program.captures == 1 and graphed.captured_shapes == 1
    # Positional inputs take the same graph.
    (third,) = graphed(torch.tensor([5.0, 6.0]), torch.tensor([0.5, 0.5]))
    assert third.tolist() == [5.5, 6.5] and program.captures == 1
    graphed(a=torch.zeros(3), b=torch.zeros(3))
    assert program.captures == 2 and graphed.captured_shapes == 2


def test_the_callers_tensors_are_never_captured() -> None:
    _, graphed = _graphed()
    a, b = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])
    graphed(a=a, b=b)
    a.fill_(100.0)  # the caller reuses its tensor: the next call passes it again explicitly
    (out,) = graphed(a=torch.tensor([0.0, 0.0]), b=b)
    assert out.tolist() == [2.0, 2.0]


def test_binding_other_state_drops_the_graphs() -> None:
    program, graphed = _graphed()
    state = {"kv.0.k": torch.zeros(1)}
    graphed.bind_state(state)
    graphed(a=torch.zeros(2), b=torch.zeros(2))
    assert graphed.bound_state is state and graphed.captured_shapes == 1
    graphed.bind_state({"kv.0.k": torch.zeros(1)})
    assert graphed.captured_shapes == 0
    graphed(a=torch.zeros(2), b=torch.zeros(2))
    assert program.captures == 2
    graphed.unbind_state()
    assert graphed.bound_state is None and graphed.captured_shapes == 0
