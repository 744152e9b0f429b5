"""The tensor-parallel tests reuse the CPU lowering tests' helpers (running a lowered module
through the JIT, tolerances from the dtype and the reduction length) and the generation
tests' weights whose greedy continuations vary."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
for _folder in (TESTS / "cpu", TESTS / "generate"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
