"""Target-independent passes; importing this package registers them all."""

from __future__ import annotations

from . import cleanup, verify

__all__ = ["cleanup", "verify"]
