"""One spelling of dtypes everywhere: torch dtypes or torch's names, and "auto" for the
checkpoint's own (as from_pretrained takes them), in tessera.compile and on the command line."""

from __future__ import annotations

import pytest
import torch

import tessera
from tessera.checkpoints.hf_config import model_dtype_from_argument
from tessera.cli_compile import DTYPES, torch_dtype
from tessera.errors import TesseraError
from tessera.models.tiny import tiny_gemma


def test_names_dtypes_and_auto() -> None:
    assert model_dtype_from_argument("auto") is None
    assert model_dtype_from_argument("bfloat16") is torch.bfloat16
    assert model_dtype_from_argument(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="'bf16' is not one of auto, float32"):
        model_dtype_from_argument("bf16")
    with pytest.raises(ValueError, match="not one of"):
        model_dtype_from_argument(torch.int8)


def test_the_command_line_takes_the_same_names() -> None:
    assert set(DTYPES) == {"auto", *(n for n in ("bfloat16", "float16", "float32"))}
    assert torch_dtype("auto") is torch.float32 and torch_dtype("bfloat16") is torch.bfloat16


def test_a_module_takes_auto_but_no_other_dtype() -> None:
    model = tiny_gemma("gemma1-mqa")
    with pytest.raises(TesseraError, match="dtype applies to checkpoint paths"):
        tessera.compile(model, dtype="bfloat16")
