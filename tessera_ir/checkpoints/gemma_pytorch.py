"""gemma_pytorch checkpoints: one ``.ckpt`` file, a torch pickle ``{"model_state_dict": {...}}``.

The pickle is opened with ``torch.load(weights_only=True)``, whose unpickler rebuilds tensors and
plain containers only (anything else, such as a callable that would run on load, is refused), and
``mmap=True``, so tensors are views of a private (copy-on-write) mapping of the file, opened for
reading, and are only read when copied out. The key names differ from transformers'
(``hf_layout.GEMMA_PYTORCH_LAYOUT``); the folder's config.json says which model the weights
belong to, since the file does not.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path

import torch

from tessera.errors import CheckpointError

from .stored import ReadTensor, StoredTensor, dtype_name

STATE_KEY = "model_state_dict"
# gemma_pytorch's int8 weights carry a per-row scale under this name.
QUANT_SCALE_SUFFIX = "weight_scaler"


def describe_ckpt(path: Path) -> dict[str, StoredTensor]:
    """Every tensor of the checkpoint (shapes and dtypes; no tensor data is read)."""
    state = _load_state(path)
    scaled = [key for key in state if key.endswith(QUANT_SCALE_SUFFIX)]
    if scaled:
        raise CheckpointError(
            "quantized (int8 with per-row scales) gemma_pytorch checkpoints are not supported",
            path=str(path),
            key=scaled[0],
        )
    return {
        key: StoredTensor(key, path, dtype_name(tensor.dtype), tuple(tensor.shape))
        for key, tensor in state.items()
    }


@contextlib.contextmanager
def open_ckpt(path: Path) -> Iterator[ReadTensor]:
    """A reader of the checkpoint's tensors (views of the file mapping, released on exit)."""
    state = _load_state(path)

    def read(stored: StoredTensor) -> torch.Tensor:
        tensor = state.get(stored.key)
        if tensor is None:
            raise CheckpointError(
                "cannot read the tensor: the file no longer holds it",
                path=str(path),
                key=stored.key,
            )
        return tensor

    try:
        yield read
    finally:
        state.clear()


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's ``model_state_dict``, memory-mapped."""
    where = str(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            "refused by torch's weights-only unpickler (the pickle holds objects other than "
            f"tensors and plain containers): {str(error).splitlines()[0]}",
            path=where,
        ) from error
    # torch.load raises RuntimeError for files that are not zip-format torch checkpoints (the
    # legacy format cannot be memory-mapped) and OSError or EOFError for unreadable or cut files.
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"torch.load cannot read it as a torch checkpoint: {str(error).splitlines()[0]}",
            path=where,
        ) from error
    state = loaded.get(STATE_KEY) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        found = (
            f"a dict with keys {sorted(map(str, loaded))[:5]}"
            if isinstance(loaded, dict)
            else f"a {type(loaded).__name__}"
        )
        raise CheckpointError(
            f"not a gemma_pytorch checkpoint: expected a dict with '{STATE_KEY}', found {found}",
            path=where,
        )
    for key, tensor in state.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"'{STATE_KEY}' maps {key!r} to a {type(tensor).__name__}, expected tensors "
                "by name",
                path=where,
            )
    return state
