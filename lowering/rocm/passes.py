"""Importing this module registers the ROCm lowering's passes and its pipeline."""

from __future__ import annotations

from . import expand_math, schedule_lds_copies, toolchain

__all__ = ["expand_math", "schedule_lds_copies", "toolchain"]
