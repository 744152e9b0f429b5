"""End to end: tessera.compile on transformers' own Gemma 1/2/3 classes against their forward.

f32 logits within 1e-4 relative error and identical greedy tokens; bf16 logits between 1e-3
and 1e-2 of a float64 run of the same (bf16) weights, never NaN. Each model runs at two
sequence lengths through one compiled artifact (the sequence length is dynamic).
"""

from __future__ import annotations

import functools

import pytest
import seeds
import torch

import tessera
from tessera.models.tiny import tiny_gemma

# (tiny config, attention implementation); transformers' Gemma 2 has no sdpa path.
MODELS = [
    ("gemma1-mqa", "eager"),
    ("gemma1-mha", "sdpa"),
    ("gemma2-gqa", "eager"),
    ("gemma3-gqa", "eager"),
    ("gemma3-gqa", "sdpa"),
    ("gemma3-mqa-odd", "sdpa"),
]
# The longer length spans two 64-token attention tiles, so tile edges meet the mask.
LENGTHS = (7, 70)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@functools.cache
def compiled_model(name: str, attn: str, dtype: torch.dtype) -> tuple[object, object]:
    model = tiny_gemma(name, dtype=dtype, attn_implementation=attn)
    return model, tessera.compile(model)


def token_ids(model: torch.nn.Module, length: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=seeds.generator())


@pytest.mark.parametrize("name,attn", MODELS)
@pytest.mark.parametrize("length", LENGTHS)
def test_f32_logits_and_greedy_tokens_match_transformers(name: str, attn: str, length: int) -> None:
    model, compiled = compiled_model(name, attn, torch.float32)
    ids = token_ids(model, length)
    with torch.no_grad():
        reference = model(ids, use_cache=False).logits
    logits = compiled(ids).logits
    assert logits.shape == reference.shape and logits.dtype == reference.dtype
    assert relative_error(logits, reference) <= 1e-4
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("name,attn", MODELS)
@pytest.mark.parametrize("length", LENGTHS)
def test_bf16_logits_are_within_bf16_error_of_float64(name: str, attn: str, length: int) -> None:
    model, compiled = compiled_model(name, attn, torch.bfloat16)
    ids = token_ids(model, length)
    exact = tiny_gemma(name, dtype=torch.float64, attn_implementation=attn)
    exact.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    with torch.no_grad():
        reference = exact(ids, use_cache=False).logits
    logits = compiled(ids).logits
    assert logits.dtype == torch.bfloat16
    assert not torch.isnan(logits).any()
    assert 1e-3 <= relative_error(logits, reference) <= 1e-2


def test_mid_level_ir_holds_the_fused_ops_inside_regions() -> None:
    _, compiled = compiled_model("gemma3-gqa", "eager", torch.float32)
    mid = compiled.ir("mid")
    counts = compiled.fused_ops()
    assert counts["tessera.region"] == 3
    for op in (
        "tessera.attention.flash",
        "tessera.mlp.swi_glu",
        "tessera.rope.apply",
        "tessera.norm.rms",
        "tessera.mma.proj",
    ):
        assert counts.get(op, 0) >= 3, op
    assert counts["tessera.tensor.lookup"] == 1
    # Every attention, MLP and rope op sits inside a region (between "tessera.region" and the
    # region's "tessera.yield").
    depth, outside = 0, []
    for line in mid.splitlines():
        if '"tessera.region"' in line:
            depth += 1
        elif '"tessera.yield"' in line:
            depth -= 1
        elif depth == 0 and any(
            op in line
            for op in ('"tessera.attention.flash"', '"tessera.mlp.swi_glu"', '"tessera.rope.apply"')
        ):
            outside.append(line.strip())
    assert outside == []
    assert "linalg.matmul" not in mid and "linalg.softmax" not in mid
