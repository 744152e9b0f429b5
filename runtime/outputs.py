"""What a compiled model's calls return, shaped like transformers' outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CausalLMOutput:
    """``cm(input_ids)``: ``logits`` [B, S, V], like ``model(input_ids).logits``. Indexing
    with 0 or "logits" also gives the logits, as a transformers output does."""

    logits: torch.Tensor

    def __getitem__(self, key: int | str) -> torch.Tensor:
        if key in (0, "logits"):
            return self.logits
        raise KeyError(key)

    def to_tuple(self) -> tuple[torch.Tensor]:
        return (self.logits,)


@dataclass(frozen=True)
class GenerateOutput:
    """``cm.generate(..., return_dict_in_generate=True)``: ``sequences`` [B, S + N] and, with
    ``output_logits=True``, the raw logits [B, V] of each step (a row whose sequence had
    already ended holds NaN: it is no longer computed)."""

    sequences: torch.Tensor
    logits: tuple[torch.Tensor, ...] | None = None
