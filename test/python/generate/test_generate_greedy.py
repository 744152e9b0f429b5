"""Greedy generation against transformers' ``generate``, token for token, on the tiny Gemma 1,
2 and 3 configurations: batches of prompts of different lengths (left padding), prompts longer
than a prefill chunk and sequences several times longer than the sliding windows; and each
step's logits against a float64 run of the whole sequence."""

from __future__ import annotations

import pytest
import seeds
import torch
from test_generate_support import (
    NAMES,
    PARITY,
    compiled,
    left_padded,
    reference_logits,
    relative_error,
    tiny_copy,
)

# Prompts of 21 tokens take two prefill chunks (a chunk is max(window, 16) tokens); 24 new
# tokens take the sequences to 45, several windows (4 to 6 tokens) long.
LENGTHS = [21, 9, 14]
NEW_TOKENS = 24


def transformers_generate(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, **options: object
) -> object:
    with torch.no_grad():
        return model.generate(
            ids,
            attention_mask=mask,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_logits=True,
            **options,
        )


@pytest.mark.parametrize("name", NAMES)
def test_greedy_generation_equals_transformers(name: str) -> None:
    model, cm = compiled(name)
    ids, mask = left_padded(LENGTHS, model.config.vocab_size, seeds.generator())
    theirs = transformers_generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=None)
    ours = cm.generate(ids, NEW_TOKENS, attention_mask=mask, eos_token_id=None)
    assert ours.shape == (len(LENGTHS), max(LENGTHS) + NEW_TOKENS)
    assert torch.equal(ours, theirs.sequences), f"\nours   {ours}\ntheirs {theirs.sequences}"
    # The continuation changes token, so a token fed back wrongly would show.
    new = ours[:, max(LENGTHS) :]
    assert max(len(set(row.tolist())) for row in new) >= 3, new


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(name, "f32") for name in NAMES] + [("gemma2-gqa", "bf16"), ("gemma3-gqa", "bf16")],
)
def test_each_steps_logits_match_a_float64_run(name: str, dtype: str) -> None:
    model, cm = compiled(name, dtype, vary=False)
    ids, mask = left_padded(LENGTHS, model.config.vocab_size, seeds.generator())
    out = cm.generate(
        ids,
        NEW_TOKENS,
        attention_mask=mask,
        eos_token_id=None,
        return_dict_in_generate=True,
        output_logits=True,
    )
    assert out.logits is not None and len(out.logits) == NEW_TOKENS
    references = reference_logits(model, out.sequences, mask, ids.shape[1])
    own: list[float] = []
    if dtype == "bf16":
        # transformers' own bf16 computation of the same logits, against the same reference.
        theirs = reference_logits(model, out.sequences, mask, ids.shape[1], torch.bfloat16)
        own = [relative_error(t, r) for t, r in zip(theirs, references, strict=True)]
    for step, (logits, reference) in enumerate(zip(out.logits, references, strict=True)):
        bound = PARITY[dtype] if dtype == "f32" else max(PARITY[dtype], 1.25 * own[step])
        error = relative_error(logits, reference)
        assert error <= bound, f"step {step}: relative error {error:.2e} > {bound:.2e}"


@pytest.mark.parametrize("name", ["gemma2-gqa", "gemma3-gqa"])
def test_each_padded_row_generates_what_it_generates_alone(name: str) -> None:
    model, cm = compiled(name)
    ids, mask = left_padded(LENGTHS, model.config.vocab_size, seeds.generator())
    batch = cm.generate(ids, 12, attention_mask=mask, eos_token_id=None)
    for row, length in enumerate(LENGTHS):
        alone = cm.generate(ids[row : row + 1, ids.shape[1] - length :], 12, eos_token_id=None)
        assert torch.equal(batch[row, ids.shape[1] :], alone[0, length:]), row


@pytest.mark.parametrize("name", ["gemma1-mqa", "gemma3-gqa"])
def test_end_tokens_stop_rows_and_pad_them_as_transformers_does(name: str) -> None:
    model, cm = compiled(name)
    ids, mask = left_padded(LENGTHS, model.config.vocab_size, seeds.generator())
    free = cm.generate(ids, NEW_TOKENS, attention_mask=mask, eos_token_id=None)
    # An end token that row 0 emits part of the way through its continuation.
    new = free[0, ids.shape[1] :].tolist()
    eos = new[len(new) // 2]
    theirs = transformers_generate(model, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=eos)
    ours = cm.generate(ids, NEW_TOKENS, attention_mask=mask, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(ours, theirs.sequences), f"\nours   {ours}\ntheirs {theirs.sequences}"
    first = ids.shape[1] + new.index(eos)
    assert torch.all(ours[0, first + 1 :] == 0), "row 0 is padded after its end token"


def test_generation_stops_when_every_row_has_ended() -> None:
    model, cm = compiled("gemma2-gqa")
    ids, _ = left_padded([7], model.config.vocab_size, seeds.generator())
    free = cm.generate(ids, 10, eos_token_id=None)
    eos = int(free[0, 7 + 3])
    stopped = cm.generate(ids, 10, eos_token_id=[eos, 10**6])
    first = free[0, 7:].tolist().index(eos)
    assert stopped.shape == (1, 7 + first + 1)
    assert torch.equal(stopped, free[:, : 7 + first + 1])


def test_the_models_own_end_token_is_the_default() -> None:
    model, cm = compiled("gemma2-gqa")
    assert cm.tokens.eos == (model.generation_config.eos_token_id,)
    assert cm.tokens.pad == model.generation_config.pad_token_id


def test_zero_new_tokens_returns_the_prompt() -> None:
    model, cm = compiled("gemma1-mqa")
    ids, mask = left_padded([5, 3], model.config.vocab_size, seeds.generator())
    assert torch.equal(cm.generate(ids, 0, attention_mask=mask), ids)


def test_a_float32_copy_generates_the_same() -> None:
    """The reference helper's copy has the model's weights (so the logit tests compare what
    they mean to compare)."""
    model, _ = compiled("gemma3-mqa-odd")
    ids, mask = left_padded([6, 4], model.config.vocab_size, seeds.generator())
    with torch.no_grad():
        a = model(ids, attention_mask=mask).logits
        b = tiny_copy(model)(ids, attention_mask=mask).logits
    assert torch.equal(a, b)
