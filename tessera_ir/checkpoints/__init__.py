"""Checkpoint loading: Gemma 1/2/3 checkpoints as Hugging Face folders (config.json with
safetensors weights, single or sharded) or gemma_pytorch ``.ckpt`` files, from a local folder or
the local Hugging Face cache.

Weights are read one tensor at a time; pickle-based weights other than gemma_pytorch's (loaded by
torch's weights-only unpickler) are never opened.
"""

from __future__ import annotations

from .hf_loader import Checkpoint, CheckpointWeights, load_hf_checkpoint, open_checkpoint
from .resolve import resolve_checkpoint

__all__ = [
    "Checkpoint",
    "CheckpointWeights",
    "load_hf_checkpoint",
    "open_checkpoint",
    "resolve_checkpoint",
]
