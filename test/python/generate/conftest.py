"""The generation tests reuse the CPU lowering tests' helpers (lowering a one-function module,
running it through the JIT, tolerances from the dtype and the reduction length)."""

from __future__ import annotations

import sys
from pathlib import Path

_CPU_TESTS = str(Path(__file__).resolve().parent.parent / "cpu")
if _CPU_TESTS not in sys.path:
    sys.path.insert(0, _CPU_TESTS)
