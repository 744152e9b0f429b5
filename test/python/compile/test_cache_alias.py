"""A module compiled before is found in the cache by its fingerprint, without a trace, and
runs with the module's own weights; a changed module or a broken alias falls back to tracing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tessera
from tessera.cache_alias import ALIASES
from tessera.models.tiny import tiny_gemma


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    return tmp_path


def _traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each trace the compiler makes."""
    import tessera.frontend as frontend

    calls: list[str] = []
    original = frontend.trace

    def counting(model: torch.nn.Module, context: object) -> object:
        calls.append(type(model).__name__)
        return original(model, context)  # type: ignore[arg-type]

    monkeypatch.setattr(frontend, "trace", counting)
    return calls


def test_a_second_compile_of_an_equal_module_does_not_trace(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = _traces(monkeypatch)
    first = tessera.compile(tiny_gemma("gemma2-gqa"))
    assert traces == ["Gemma2ForCausalLM"] and not first.cache_hit
    model = tiny_gemma("gemma2-gqa")
    with torch.no_grad():  # other weights, same shapes: the same artifact, bound to these
        for parameter in model.parameters():
            parameter.mul_(0.5)
    second = tessera.compile(model)
    assert traces == ["Gemma2ForCausalLM"] and second.cache_hit and second.key == first.key
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2]])
    reference = model(ids).logits
    logits = second(ids).logits
    bound = 1e-5 * reference.abs().max().item()
    assert (logits - reference).abs().max().item() <= bound


def test_a_changed_module_or_a_broken_alias_traces_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = _traces(monkeypatch)
    tessera.compile(tiny_gemma("gemma3-gqa"))
    other = tiny_gemma("gemma3-gqa")
    other.config.final_logit_softcapping = 7.0  # tracing reads the config: not the same module
    tessera.compile(other)
    assert len(traces) == 2
    for alias in (cache / ALIASES).iterdir():
        alias.write_text("{not json")
    tessera.compile(tiny_gemma("gemma3-gqa"))
    assert len(traces) == 3
