"""Attention masks as tokenizers return them: [B, S] of 1 (a token) and 0 (padding).

A padded batch is run as transformers runs it: each token's rope position counts the real
tokens before it (``cumsum(mask) − 1``), and padding keys are hidden. The compiled cache
programs hide the keys before a per-sequence start (``kv_start``), which covers left padding;
right padding needs nothing, since causal attention never shows a real token the keys after
it. So a row's ones must form one run: ``[0, 0, 1, 1, 1, 0]`` is taken, ``[1, 0, 1]`` is
refused rather than run wrong.
"""

from __future__ import annotations

import torch

from tessera.errors import RuntimeInputError

from .checks import as_integer_tensor


def as_mask(mask: object, shape: torch.Size) -> torch.Tensor:
    """``mask`` (a tensor, array or nested list of 0/1 or bools) as a bool tensor of ``shape``
    (the token ids'), or a ``RuntimeInputError`` naming what is wrong."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        tensor = mask
    else:
        tensor = as_integer_tensor(mask, "attention_mask")
        bad = (tensor != 0) & (tensor != 1)
        if bool(bad.any()):
            where = [int(i) for i in bad.nonzero()[0]]
            raise RuntimeInputError(
                f"attention_mask holds {int(tensor[tuple(where)])} at index {where}; a mask "
                "holds 1 for a token and 0 for padding"
            )
        tensor = tensor.bool()
    if tuple(tensor.shape) != tuple(shape):
        raise RuntimeInputError(
            f"attention_mask has shape {list(tensor.shape)}; it must match input_ids {list(shape)}"
        )
    return tensor.cpu()


def padding_starts(mask: torch.Tensor, *, left_only: bool = False) -> torch.Tensor:
    """Each row's first token index [B] (int64; S for a row without tokens). Each row's
    ones must be one run; with ``left_only`` (generation, where new tokens follow the last
    column) the run must also reach the last column."""
    rows, length = mask.shape
    columns = torch.arange(length).expand(rows, length)
    counts = mask.sum(dim=1)
    starts = torch.where(mask, columns, length).amin(dim=1)
    ends = torch.where(mask, columns + 1, 0).amax(dim=1)
    for row in range(rows):
        count, start, end = int(counts[row]), int(starts[row]), int(ends[row])
        if count and end - start != count:
            raise RuntimeInputError(
                f"attention_mask row {row} has padding between its tokens "
                f"({mask[row].int().tolist()}); pad on the left or the right only"
            )
        if left_only and not count:
            raise RuntimeInputError(f"attention_mask row {row} has no token to continue")
        if left_only and end != length:
            raise RuntimeInputError(
                f"attention_mask row {row} ends in padding ({mask[row].int().tolist()}); "
                "generation continues every row after its last column, so pad on the left "
                "(tokenizer.padding_side = 'left')"
            )
    return starts.to(torch.int64)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Rope positions [B, S] as transformers computes them from a mask: the number of real
    tokens before each one (padding gets 0; its outputs are never used)."""
    return (mask.to(torch.int64).cumsum(dim=1) - 1).clamp(min=0)
