"""Checkpoint loading: Hugging Face Gemma 1/2/3 directories (config.json + safetensors).

Only safetensors weights are read, and only for reading; pickle-based files are never opened.
"""

from __future__ import annotations

from .hf_loader import load_hf_checkpoint

__all__ = ["load_hf_checkpoint"]
