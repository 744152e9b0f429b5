"""A stored tensor as its file describes it, and the safetensors dtype names used to talk about it.

Both weight formats (safetensors, gemma_pytorch ``.ckpt``) describe their tensors in these terms,
so that the loader checks and reads them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# Floating-point dtypes (by safetensors' names) whose values torch converts exactly into any
# wider float and by round-to-nearest-even into a narrower one. F8_E8M0 (a scale format) and the
# sub-byte floats only appear in quantised checkpoints, which carry scales a plain conversion
# would ignore.
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
}  # fmt: skip

# Non-float dtypes that have a torch equivalent (a model buffer of such a dtype must match it).
OTHER_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "I32": torch.int32, "I64": torch.int64, "C64": torch.complex64,
}  # fmt: skip

TORCH_DTYPES = FLOAT_DTYPES | OTHER_DTYPES
DTYPE_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as its file describes it (no data read)."""

    key: str
    file: Path
    dtype: str  # safetensors' name, e.g. "BF16" (torch's for dtypes safetensors lacks)
    shape: tuple[int, ...]


def dtype_name(dtype: torch.dtype) -> str:
    """``dtype`` by its safetensors name (torch's name where safetensors has none)."""
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


# Reads one stored tensor. The tensor may be a view of a file mapping: copy it before keeping it.
ReadTensor = Callable[[StoredTensor], torch.Tensor]
