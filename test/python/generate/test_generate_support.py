"""Helpers shared by the generation tests: compiled tiny models (each configuration compiled
once per session), weights whose greedy continuations vary, prompts with left padding, and
float64 references of the logits each step was chosen from."""

from __future__ import annotations

import functools

import seeds
import torch

import tessera
from tessera.models.tiny import tiny_gemma

NAMES = ("gemma1-mqa", "gemma2-gqa", "gemma3-gqa", "gemma3-mqa-odd")
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
# Whole-model parity bounds against float64 (docs/architecture.md, "Testing"): f32 within
# 1e-4; bf16 within 1e-2, or 1.25 times transformers' own bf16 error where that is larger.
PARITY = {"f32": 1e-4, "bf16": 1e-2}


def varied(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with weights whose greedy continuations change token (in place).

    With the tiny models' random weights the embedding dominates the residual stream, and
    since the LM head is the embedding, greedy decoding repeats the last prompt token forever:
    a test could then not tell whether each new token is fed back. Larger post-attention and
    post-MLP norm weights (Gemma 2 and 3), or a smaller embedding and larger block outputs
    (Gemma 1, which has no post norms), let the blocks decide."""
    with torch.no_grad():
        post_norms = ("post_attention_layernorm", "post_feedforward_layernorm")
        for name, parameter in model.named_parameters():
            if model.config.model_type == "gemma":
                if "embed_tokens" in name:
                    parameter.mul_(0.03)
                elif name.endswith(("o_proj.weight", "down_proj.weight")):
                    parameter.mul_(4.0)
            elif any(part in name for part in post_norms):
                parameter.add_(16.0)
    return model


@functools.cache
def compiled(
    name: str, dtype: str = "f32", *, vary: bool = True
) -> tuple[torch.nn.Module, tessera.CompiledModel]:
    """A tiny model (``varied`` unless ``vary`` is False: the configurations' own weights keep
    bf16 rounding realistic, the varied ones amplify it) and its compiled form, both shared
    by the session's tests, which must not change the model."""
    model = tiny_gemma(name, dtype=DTYPES[dtype])
    if vary:
        varied(model)
    return model, tessera.compile(model)


def left_padded(
    lengths: list[int], vocab: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of ``lengths`` tokens, left padded to the longest with token 0: ids and mask."""
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.int64)
    mask = torch.zeros((len(lengths), width), dtype=torch.int64)
    for row, length in enumerate(lengths):
        # Ids from 3 on: 0, 1 and 2 are the pad, end and start tokens of the tiny configs.
        ids[row, width - length :] = torch.randint(3, vocab, (length,), generator=generator)
        mask[row, width - length :] = 1
    return ids, mask


def reference_logits(
    model: torch.nn.Module,
    sequences: torch.Tensor,
    mask: torch.Tensor,
    prompt: int,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """The logits [B, V] each generated token of ``sequences`` was chosen from, by a copy of
    ``model`` in ``dtype`` run over each row's tokens alone (its padding stripped: what a
    padded row must compute) in one forward pass without a cache."""
    copy = tiny_copy(model).to(dtype)
    rows = []
    with torch.no_grad():
        for row in range(sequences.shape[0]):
            padding = int((mask[row] == 0).sum())
            tokens = sequences[row : row + 1, padding:]
            rows.append(copy(tokens, use_cache=False).logits[0, prompt - padding - 1 :])
    return [torch.stack([r[step] for r in rows]) for step in range(sequences.shape[1] - prompt)]


def tiny_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``model`` with the same weights."""
    copy = type(model)(model.config).eval()
    copy.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return copy


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def prompt_batch(vocab: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded(lengths, vocab, seeds.generator())
