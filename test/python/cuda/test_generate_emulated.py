"""Generation through the CUDA target's ``prefill_kv`` and ``decode`` programs, run without a
GPU: each program's launches executed by the kernel interpreter (``emulated_program.py``) and
driven by the runtime's own generation loop (``runtime/generate.py``) over a paged cache whose
blocks are the programs' state buffers, poisoned before first use. Greedy tokens must equal
transformers' ``generate`` token for token (left-padded prompts of different lengths,
sequences longer than the sliding window, a prompt taken in two prefill chunks), and each
step's logits must match a float64 run of the whole sequence."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import pytest
import seeds
import torch
from emulated_program import Emulated

import tessera
from tessera.models.tiny import tiny_gemma
from tessera.runtime import kv_layout
from tessera.runtime.generate import CachedPrograms, Request, cached_programs, decode_steps
from tessera.runtime.sampling import Sampling

_GENERATE_TESTS = str(Path(__file__).resolve().parent.parent / "generate")
if _GENERATE_TESTS not in sys.path:
    sys.path.insert(0, _GENERATE_TESTS)

from test_generate_support import (  # noqa: E402
    DTYPES,
    PARITY,
    left_padded,
    reference_logits,
    relative_error,
    varied,
)


@functools.cache
def emulated(
    name: str, dtype: str = "f32", target: str = "cuda:sm_90"
) -> tuple[torch.nn.Module, CachedPrograms]:
    """A tiny model (f32: varied weights; bf16: the configuration's own, whose rounding is
    realistic) and its GPU artifact's cache programs, emulated (sm_90: the interpreter runs
    no wgmma, which only sm_90a's bf16 projections use)."""
    model = tiny_gemma(name, dtype=DTYPES[dtype])
    if dtype == "f32":
        varied(model)
    directory = tessera.compile(model, target=target).directory
    prefill = Emulated.load(directory, kv_layout.PREFILL_PROGRAM)
    prefill.bind(dict(model.state_dict()))
    manifest = tessera.runtime.read_manifest(directory)
    programs = {kv_layout.PREFILL_PROGRAM: prefill}
    for name in (kv_layout.DECODE_PROGRAM, kv_layout.GREEDY_DECODE_PROGRAM):
        if any(p.name == name for p in manifest.programs):
            programs[name] = prefill.share(name)
    # The emulated kernels run on the host: the cache lives there too.
    return model, dataclasses.replace(cached_programs(manifest, programs), device="cpu")


def transformers_greedy(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int
) -> torch.Tensor:
    """transformers' own greedy ``generate`` of ``new_tokens`` (no end token, pad 0)."""
    with torch.no_grad():
        return model.generate(  # type: ignore[operator]
            ids,
            attention_mask=mask,
            do_sample=False,
            pad_token_id=0,
            max_new_tokens=new_tokens,
            eos_token_id=None,
        )


def _greedy(new_tokens: int) -> Request:
    return Request(new_tokens, Sampling(), seed=None, eos_token_ids=frozenset(), pad_token_id=0)


# Gemma 2's window is 6 tokens and a prefill chunk 16: the 17-token prompt takes two chunks,
# and 7 new tokens take the sequences past several windows.
@pytest.mark.parametrize(
    ("name", "lengths", "new_tokens"),
    [
        ("gemma2-gqa", [17, 8], 7),
        # a batch of one: the decode step's 1-row GEMVs launch instead of the 8-row ones
        ("gemma2-gqa", [17], 7),
        pytest.param("gemma3-gqa", [9, 4], 6, marks=pytest.mark.slow),
        pytest.param("gemma1-mqa", [9, 4], 6, marks=pytest.mark.slow),
    ],
)
def test_greedy_generation_equals_transformers(
    name: str, lengths: list[int], new_tokens: int
) -> None:
    check_greedy_generation(name, lengths, new_tokens, "cuda:sm_90")


def check_greedy_generation(name: str, lengths: list[int], new_tokens: int, target: str) -> None:
    """Greedy tokens of the emulated ``target`` artifact equal transformers' ``generate``, and
    each step's logits match a float64 run."""
    model, programs = emulated(name, "f32", target)
    ids, mask = left_padded(lengths, model.config.vocab_size, seeds.generator())
    steps = list(decode_steps(programs, ids, mask.bool(), _greedy(new_tokens), keep_logits=True))
    ours = torch.cat([ids, torch.stack([s.tokens for s in steps], dim=1)], dim=1)
    theirs = transformers_greedy(model, ids, mask, new_tokens)
    assert torch.equal(ours, theirs), f"\nours   {ours}\ntheirs {theirs}"
    assert max(len(set(row.tolist())) for row in ours[:, max(lengths) :]) >= 3
    references = reference_logits(model, ours, mask, ids.shape[1])
    for step, (kept, reference) in enumerate(zip(steps, references, strict=True)):
        assert kept.logits is not None
        error = relative_error(kept.logits, reference)
        assert error <= PARITY["f32"], f"step {step}: relative error {error:.2e}"


def test_bf16_steps_stay_as_close_to_float64_as_transformers_bf16() -> None:
    """bf16 kernels (GEMVs, paged attention, the cache in bf16): each step's logits no
    further from a float64 run than transformers' own bf16 run (x1.25), or 1e-2."""
    model, programs = emulated("gemma2-gqa", "bf16")
    ids, mask = left_padded([17, 8], model.config.vocab_size, seeds.generator())
    steps = list(decode_steps(programs, ids, mask.bool(), _greedy(5), keep_logits=True))
    sequences = torch.cat([ids, torch.stack([s.tokens for s in steps], dim=1)], dim=1)
    references = reference_logits(model, sequences, mask, ids.shape[1])
    theirs = reference_logits(model, sequences, mask, ids.shape[1], torch.bfloat16)
    for step, (kept, reference, own) in enumerate(zip(steps, references, theirs, strict=True)):
        assert kept.logits is not None
        bound = max(PARITY["bf16"], 1.25 * relative_error(own, reference))
        error = relative_error(kept.logits, reference)
        assert error <= bound, f"step {step}: relative error {error:.2e} > {bound:.2e}"


class _Counting:
    """A program that counts its calls (and otherwise is the program it wraps)."""

    def __init__(self, program: object) -> None:
        self.program, self.calls = program, 0

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        return self.program(*inputs, **named)  # type: ignore[operator]

    def __getattr__(self, name: str) -> object:
        return getattr(self.program, name)

    def bind_state(self, tensors: object) -> None:
        self.program.bind_state(tensors)  # type: ignore[attr-defined]

    @property
    def bound_state(self) -> object:
        return self.program.bound_state  # type: ignore[attr-defined]

    def unbind_state(self) -> None:
        self.program.unbind_state()  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_greedy_decode_program_chooses_what_the_logits_argmax_chooses(dtype: str) -> None:
    """Greedy generation whose logits nobody keeps runs ``decode_greedy`` (the LM head choosing
    the token, the logits never written) instead of ``decode``: its tokens equal those chosen
    from ``decode``'s logits exactly, in f32 and in bf16 (where ties and near-ties of rounded
    logits are likeliest), and in f32 transformers' ``generate`` too."""
    model, programs = emulated("gemma2-gqa", dtype)
    assert programs.greedy is not None, "the CUDA target builds the greedy decode step"
    decode, greedy = _Counting(programs.decode), _Counting(programs.greedy)
    spied = dataclasses.replace(programs, decode=decode, greedy=greedy)
    ids, mask = left_padded([17, 8], model.config.vocab_size, seeds.generator())
    new_tokens = 6
    fused = [s.tokens for s in decode_steps(spied, ids, mask.bool(), _greedy(new_tokens))]
    assert (greedy.calls, decode.calls) == (new_tokens - 1, 0)
    steps = list(decode_steps(spied, ids, mask.bool(), _greedy(new_tokens), keep_logits=True))
    assert decode.calls == new_tokens - 1, "kept logits come from the logits program"
    from_logits = [s.tokens for s in steps]
    assert torch.equal(torch.stack(fused), torch.stack(from_logits))
    if dtype == "f32":
        theirs = transformers_greedy(model, ids, mask, new_tokens)
        assert torch.equal(torch.cat([ids, torch.stack(fused, dim=1)], dim=1), theirs)
