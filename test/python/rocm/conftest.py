"""The ROCm tests run the CUDA tests' kernel interpreter (``test/python/cuda/gpu_interpreter``)
on the kernels built for AMD devices; its folder goes on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

_CUDA_TESTS = str(Path(__file__).resolve().parent.parent / "cuda")
if _CUDA_TESTS not in sys.path:
    sys.path.insert(0, _CUDA_TESTS)
