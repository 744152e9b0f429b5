"""Loading the compiler's passes and lowerings (what tessera-opt does on every run) does not
import torch: torch takes seconds to import, and the lit suite runs tessera-opt hundreds of
times. torch is imported where a pass needs it, inside the function."""

from __future__ import annotations

import subprocess
import sys


def test_passes_and_lowerings_load_without_torch() -> None:
    code = (
        "import sys; import tessera.passes, tessera.lowering, tessera.opt; "
        "from tessera.pass_registry import load_all; load_all(); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", result.stdout + result.stderr
