"""Choosing the next token from logits: greedy, or sampled after temperature, top-k and top-p,
applied in that order as transformers' logits warpers apply them.

Everything is torch operations on the logits' device (the same code serves CPU and CUDA
tensors). Sampling draws with ``torch.multinomial`` from a ``torch.Generator`` seeded by the
caller, so a seed reproduces the tokens; ``top_k=1`` keeps only the largest logit and so
picks what greedy picks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tessera.errors import RuntimeInputError


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. ``do_sample=False`` takes the largest logit (the other
    fields are then unused, as in transformers); otherwise ``temperature`` (> 0) divides the
    logits, ``top_k`` keeps the k largest (None or 0: all; transformers' default is 50, this
    one keeps all), ``top_p`` keeps the smallest set of most likely tokens whose probability
    reaches p (None or 1.0: all)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise RuntimeInputError(f"do_sample must be a bool, found {self.do_sample!r}")
        temperature = self.temperature
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise RuntimeInputError(
                f"temperature must be a positive number, found {temperature!r} (greedy "
                "decoding is do_sample=False)"
            )
        if self.top_k is not None and (
            isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0
        ):
            raise RuntimeInputError(
                f"top_k must be a positive integer (None or 0: no limit), found {self.top_k!r}"
            )
        if self.top_p is not None and (
            isinstance(self.top_p, bool)
            or not isinstance(self.top_p, int | float)
            or not 0 < self.top_p <= 1
        ):
            raise RuntimeInputError(f"top_p must lie in (0, 1], found {self.top_p!r}")


def warp(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """``logits`` [B, V] (f32) after temperature, top-k and top-p; removed tokens get -inf."""
    scores = logits
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k:
        k = min(sampling.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, dim=-1, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        # Drop the least likely tokens whose total stays within 1 - p; the likeliest stays.
        drop = cumulative <= (1 - sampling.top_p)
        drop[..., -1:] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return scores


def next_tokens(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The chosen token [B] (int64) of each row of ``logits`` [B, V]."""
    scores = logits.float()
    if not sampling.do_sample:
        return torch.argmax(scores, dim=-1)
    probabilities = warp(scores, sampling).softmax(dim=-1)
    return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(1)


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator seeded with ``seed`` on ``device`` (None: torch's global one)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RuntimeInputError(f"seed must be an integer, found {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)
