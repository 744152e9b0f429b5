"""Sampling: temperature, top-k and top-p as transformers' logits warpers apply them (in that
order), seeded draws that reproduce, top_k=1 (or a tiny top_p) equal to greedy, and clear
errors for bad settings."""

from __future__ import annotations

import math

import pytest
import seeds
import torch
from test_generate_support import compiled, left_padded
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tessera import RuntimeInputError
from tessera.runtime.sampling import Sampling, next_tokens, seeded_generator, warp


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, None, None), (0.7, None, None), (1.3, 5, None), (1.0, None, 0.8), (0.6, 7, 0.5)],
)
def test_warping_equals_transformers_warpers(
    temperature: float, top_k: int | None, top_p: float | None
) -> None:
    logits = torch.randn((4, 97), generator=seeds.generator()) * 3
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None:
        warpers.append(TopPLogitsWarper(top_p))
    expected = warpers(torch.zeros((4, 1), dtype=torch.int64), logits.clone())
    ours = warp(logits, Sampling(True, temperature, top_k, top_p))
    assert torch.equal(ours.isinf(), expected.isinf())
    kept = ~expected.isinf()
    assert torch.allclose(ours[kept], expected[kept], rtol=0, atol=0)


def test_top_k_keeps_the_k_largest_and_draws_only_them() -> None:
    logits = torch.randn((3, 50), generator=seeds.generator())
    sampling = Sampling(True, 1.0, 3, None)
    allowed = torch.topk(logits, 3).indices
    generator = seeded_generator(11, logits.device)
    for _ in range(50):
        drawn = next_tokens(logits, sampling, generator)
        assert all(int(drawn[r]) in allowed[r].tolist() for r in range(3))


def test_greedy_takes_the_largest_logit() -> None:
    logits = torch.randn((5, 40), generator=seeds.generator())
    assert torch.equal(next_tokens(logits, Sampling()), logits.argmax(-1))


def test_seeded_sampling_reproduces_and_seeds_differ() -> None:
    model, cm = compiled("gemma3-gqa")
    ids, mask = left_padded([8, 5], model.config.vocab_size, seeds.generator())
    options = dict(attention_mask=mask, do_sample=True, temperature=1.5, eos_token_id=None)
    first = cm.generate(ids, 16, seed=123, **options)
    again = cm.generate(ids, 16, seed=123, **options)
    other = cm.generate(ids, 16, seed=321, **options)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampling_with_top_k_one_or_a_tiny_top_p_is_greedy() -> None:
    model, cm = compiled("gemma2-gqa")
    ids, mask = left_padded([9, 6, 9], model.config.vocab_size, seeds.generator())
    greedy = cm.generate(ids, 16, attention_mask=mask, eos_token_id=None)
    for options in ({"top_k": 1, "temperature": 2.0}, {"top_p": 1e-9}):
        sampled = cm.generate(
            ids, 16, attention_mask=mask, eos_token_id=None, do_sample=True, seed=5, **options
        )
        assert torch.equal(sampled, greedy), options


def test_the_stream_yields_what_generate_returns() -> None:
    model, cm = compiled("gemma3-mqa-odd")
    ids, mask = left_padded([7, 4], model.config.vocab_size, seeds.generator())
    options = dict(attention_mask=mask, do_sample=True, top_p=0.9, seed=8, eos_token_id=None)
    whole = cm.generate(ids, 12, **options)
    steps = list(cm.stream(ids, 12, **options))
    assert len(steps) == 12 and all(step.shape == (2,) for step in steps)
    assert torch.equal(torch.stack(steps, dim=1), whole[:, ids.shape[1] :])


class Recorder:
    """A transformers-style streamer that keeps what it is given."""

    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        assert not self.ended
        self.values.append(value.clone())

    def end(self) -> None:
        self.ended = True


def test_a_streamer_gets_the_prompt_each_token_and_the_end() -> None:
    model, cm = compiled("gemma1-mqa")
    ids, _ = left_padded([6], model.config.vocab_size, seeds.generator())
    recorder = Recorder()
    out = cm.generate(ids, 5, eos_token_id=None, streamer=recorder)
    assert recorder.ended
    assert torch.equal(recorder.values[0], ids)
    assert torch.equal(torch.stack(recorder.values[1:], dim=1), out[:, 6:])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0.0}, "temperature must be a positive number"),
        ({"temperature": math.nan}, "temperature must be a positive number"),
        ({"top_k": -2}, "top_k must be a positive integer"),
        ({"top_k": 2.5}, "top_k must be a positive integer"),
        ({"top_p": 0.0}, r"top_p must lie in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must lie in \(0, 1\]"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"max_new_tokens": -1}, "max_new_tokens must be at least 0"),
        ({"eos_token_id": "x"}, "eos_token_id must be a token id"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, object], message: str) -> None:
    model, cm = compiled("gemma1-mqa")
    ids, _ = left_padded([4], model.config.vocab_size, seeds.generator())
    arguments = {"max_new_tokens": 3, "do_sample": True, **options}
    with pytest.raises(RuntimeInputError, match=message):
        cm.generate(ids, **arguments)


def test_interleaved_streams_keep_their_own_caches() -> None:
    model, cm = compiled("gemma2-gqa")
    generator = seeds.generator()
    first, mask = left_padded([9, 4], model.config.vocab_size, generator)
    second, _ = left_padded([13], model.config.vocab_size, generator)
    expected_first = cm.generate(first, 10, attention_mask=mask, eos_token_id=None)
    expected_second = cm.generate(second, 10, eos_token_id=None)
    a = cm.stream(first, 10, attention_mask=mask, eos_token_id=None)
    b = cm.stream(second, 10, eos_token_id=None)
    steps_a, steps_b = [], []
    for _ in range(10):
        steps_a.append(next(a))
        steps_b.append(next(b))
    assert torch.equal(torch.stack(steps_a, dim=1), expected_first[:, 9:])
    assert torch.equal(torch.stack(steps_b, dim=1), expected_second[:, 13:])
