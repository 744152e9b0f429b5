"""``cm(input_ids, attention_mask)`` as transformers users call a model: what a tokenizer
returns goes in, an output with ``.logits`` comes out (the tensor itself with
``return_dict=False``); padded batches give every real position the logits of its row run
alone; and bad input is a Tessera error that says what is wrong."""

from __future__ import annotations

import numpy
import pytest
import seeds
import torch
from test_generate_support import PARITY, compiled, left_padded, relative_error
from transformers import BatchEncoding

from tessera import RuntimeInputError, TesseraError
from tessera.runtime.outputs import CausalLMOutput


def test_the_output_holds_the_logits() -> None:
    model, cm = compiled("gemma2-gqa", vary=False)
    ids = torch.randint(3, model.config.vocab_size, (2, 11), generator=seeds.generator())
    out = cm(ids)
    assert isinstance(out, CausalLMOutput)
    with torch.no_grad():
        reference = model(ids, use_cache=False).logits
    assert relative_error(out.logits, reference) <= PARITY["f32"]
    assert out[0] is out.logits and out["logits"] is out.logits
    assert out.to_tuple() == (out.logits,)
    plain = cm(ids, return_dict=False)
    assert isinstance(plain, torch.Tensor) and torch.equal(plain, out.logits)


def test_what_a_tokenizer_returns_goes_in_as_it_is() -> None:
    model, cm = compiled("gemma3-gqa", vary=False)
    ids, mask = left_padded([10, 6], model.config.vocab_size, seeds.generator())
    encoded = BatchEncoding({"input_ids": ids, "attention_mask": mask})
    out = cm(**encoded)
    assert torch.equal(out.logits, cm(ids, attention_mask=mask).logits)
    # Lists of ints and numpy arrays, as tokenizers return without return_tensors="pt".
    listed = cm(ids.tolist(), attention_mask=mask.tolist())
    arrays = cm(ids.numpy(), attention_mask=mask.numpy().astype(numpy.int32))
    assert torch.equal(listed.logits, out.logits) and torch.equal(arrays.logits, out.logits)


@pytest.mark.parametrize("name", ["gemma1-mqa", "gemma2-gqa", "gemma3-gqa"])
@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_padded_rows_give_the_logits_of_each_row_alone(name: str, side: str) -> None:
    model, cm = compiled(name, vary=False)
    generator = seeds.generator()
    # Longer than every window, so that a wrong window or position would show.
    lengths = [14, 9, 12]
    width = 16
    ids = torch.zeros((3, width), dtype=torch.int64)
    mask = torch.zeros((3, width), dtype=torch.int64)
    places = []
    for row, length in enumerate(lengths):
        start = {"left": width - length, "right": 0, "both": (width - length) // 2}[side]
        ids[row, start : start + length] = torch.randint(
            3, model.config.vocab_size, (length,), generator=generator
        )
        mask[row, start : start + length] = 1
        places.append((start, length))
    logits = cm(ids, attention_mask=mask).logits
    for row, (start, length) in enumerate(places):
        alone = cm(ids[row : row + 1, start : start + length]).logits[0]
        real = logits[row, start : start + length]
        assert relative_error(real, alone) <= PARITY["f32"], (row, side)
        with torch.no_grad():
            reference = model(ids[row : row + 1, start : start + length], use_cache=False)
        assert relative_error(real, reference.logits[0]) <= PARITY["f32"], (row, side)


def test_a_view_into_a_larger_tensor_is_read_where_it_starts() -> None:
    model, cm = compiled("gemma1-mqa", vary=False)
    ids = torch.randint(3, model.config.vocab_size, (3, 8), generator=seeds.generator())
    rows = ids[1:]
    assert rows.is_contiguous() and rows.storage_offset() > 0
    assert torch.equal(cm(rows).logits, cm(rows.clone()).logits)


@pytest.mark.parametrize(
    ("input_ids", "mask", "message"),
    [
        ("Hello there", None, "input_ids must be token ids, found a str; tokenize the text"),
        (None, None, "input_ids must be token ids .* found None"),
        ([[1, 2.5, 3]], None, r"input_ids holds 2\.5 at \[0\]\[1\]; it must hold integers"),
        ([[1, True]], None, r"input_ids holds True at \[0\]\[1\]"),
        ([[1, 2, 3], [4, 5]], None, "not a rectangular array of integers"),
        (torch.tensor([[1.0, 2.0]]), None, "input_ids has dtype f32"),
        (torch.tensor([[True, False]]), None, "input_ids has dtype i1"),
        (numpy.array([[1.0, 2.0]]), None, "input_ids has dtype float64"),
        (torch.tensor([1, 2, 3]), None, r"input_ids has rank 1 \[3\]; expected rank 2"),
        ({"a": 1}, None, "input_ids must be a tensor, a numpy array or lists of ints"),
        ([[4, 5, 6]], [[1, 2, 1]], r"attention_mask holds 2 at index \[0, 1\]"),
        ([[4, 5, 6]], [[1, 1]], r"attention_mask has shape \[1, 2\]; it must match input_ids"),
        ([[4, 5, 6]], [[1, 0, 1]], "attention_mask row 0 has padding between its tokens"),
        ([[4, 5, 6]], "mask", "attention_mask must be token ids, found a str"),
    ],
)
def test_bad_input_is_a_clear_tessera_error(input_ids: object, mask: object, message: str) -> None:
    _, cm = compiled("gemma1-mqa", vary=False)
    with pytest.raises(RuntimeInputError, match=message):
        cm(input_ids, attention_mask=mask)


def test_generation_refuses_right_padding_and_rows_without_tokens() -> None:
    _, cm = compiled("gemma1-mqa", vary=False)
    ids = torch.tensor([[4, 5, 6], [7, 8, 9]])
    with pytest.raises(RuntimeInputError, match=r"row 1 ends in padding .* pad on the left"):
        cm.generate(ids, 2, attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    with pytest.raises(RuntimeInputError, match="row 0 has no token to continue"):
        cm.generate(ids, 2, attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]]))


def test_a_sequence_past_the_compiled_length_is_refused() -> None:
    import tessera
    from tessera.models.tiny import tiny_gemma

    cm = tessera.compile(tiny_gemma("gemma1-mqa"), max_seq_len=24)
    with pytest.raises(RuntimeInputError, match="make 30 tokens; the model was compiled for"):
        cm.generate(torch.full((1, 20), 5), 10)
    assert cm.generate(torch.full((1, 20), 5), 4, eos_token_id=None).shape == (1, 24)


def test_a_model_without_a_cache_says_why() -> None:
    import tessera

    class Bidirectional(torch.nn.Module):
        """Attention over all tokens (not causal): no KV cache serves it."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(32, 16)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(input_ids)
            q = x.view(x.shape[0], x.shape[1], 1, 16).transpose(1, 2)
            o = torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return o.transpose(1, 2).reshape(x.shape) @ self.embed.weight.T

    cm = tessera.compile(Bidirectional())
    ids = torch.tensor([[1, 2, 3]])
    assert cm(ids).logits.shape == (1, 3, 32)
    with pytest.raises(TesseraError, match="no KV-cache programs"):
        cm.generate(ids, 2)
