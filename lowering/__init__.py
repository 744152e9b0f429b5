"""Per-target lowering; importing this package registers the lowering passes."""

from __future__ import annotations

from .cpu import entry_abi
from .cpu import pipeline as cpu_pipeline
from .cuda import attention_layout, norm_layout, schedule_async_copies  # noqa: F401  (register passes)
from .rocm import passes as rocm_passes  # noqa: F401  (register passes and the pipeline)

__all__ = ["cpu_pipeline", "entry_abi"]
