"""torch.export as the front end runs it: a dynamic batch when the model allows one, else a
static batch that still compiles and runs; when both attempts fail, both errors are shown."""

from __future__ import annotations

import pytest
import seeds
import torch

import tessera
from tessera.context import make_context
from tessera.errors import RuntimeInputError, TesseraError
from tessera.frontend import trace
from tessera.frontend.trace import EXAMPLE_BATCH
from tessera.models.tiny import tiny_gemma

NAME = "gemma1-mqa"


class FixedBatch(torch.nn.Module):
    """A model written for one batch size: torch.export cannot make its batch dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_gemma(NAME)
        self.config = self.inner.config

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        torch._check(input_ids.shape[0] == EXAMPLE_BATCH)
        return self.inner(input_ids, use_cache=False).logits


class FailsBoth(torch.nn.Module):
    """Fails one way under a symbolic batch and another under a static one."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if isinstance(input_ids.shape[0], torch.SymInt):
            raise ValueError("the dynamic attempt's own reason")
        raise ValueError("the static attempt's own reason")


def test_a_model_with_a_fixed_batch_traces_with_a_static_batch() -> None:
    traced = trace(FixedBatch().eval(), make_context())
    assert not traced.dynamic_batch
    assert f"tensor<{EXAMPLE_BATCH}x?xi64>" in str(traced.module)


def test_a_model_with_a_fixed_batch_compiles_and_matches() -> None:
    model = FixedBatch().eval()
    compiled = tessera.compile(model)
    ids = torch.randint(
        0, model.config.vocab_size, (EXAMPLE_BATCH, 11), generator=seeds.generator()
    )
    with torch.no_grad():
        reference = model(ids)
    error = float((compiled(ids).logits - reference).norm() / reference.norm())
    assert error <= 1e-4  # the f32 parity bound (docs/architecture.md, "Testing")
    # The batch is part of the compiled program: another one is refused by name.
    with pytest.raises(RuntimeInputError, match=f"input_ids.*{EXAMPLE_BATCH}"):
        compiled(ids[:1])


def test_when_both_exports_fail_the_first_error_is_shown() -> None:
    with pytest.raises(TesseraError) as failed:
        trace(FailsBoth().eval(), make_context())
    message = str(failed.value)
    assert "torch.export failed for FailsBoth" in message
    assert "with a dynamic batch and sequence length: ValueError: the dynamic attempt's" in message
    assert f"with a static batch of {EXAMPLE_BATCH}: ValueError: the static attempt's" in message
    # The first attempt's exception is the cause, with its own traceback.
    assert "the dynamic attempt's own reason" in str(failed.value.__cause__)
