"""Per-target lowering; importing this package registers the lowering passes."""

from __future__ import annotations

from .cpu import entry_abi
from .cpu import pipeline as cpu_pipeline

__all__ = ["cpu_pipeline", "entry_abi"]
