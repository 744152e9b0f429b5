"""Generation through the ROCm target's ``prefill_kv`` and ``decode`` programs, run without a
GPU: the kernels built for an AMD device (LDS staging instead of cp.async, the cache kernels'
shuffles within 32-lane groups) executed by the kernel interpreter under the runtime's own
generation loop, token for token against transformers' ``generate`` (as
``test/python/cuda/test_generate_emulated.py`` does for CUDA). Unrun on AMD hardware."""

from __future__ import annotations

import amd_interpreter  # noqa: F401  (registers the AMD rules)
from test_generate_emulated import check_greedy_generation


def test_greedy_generation_equals_transformers() -> None:
    # gfx942 (CDNA3, wave64: the cache kernels' 32-lane groups are half waves); the f32 GEMMs
    # are the SIMT kernel on every AMD chip.
    check_greedy_generation("gemma2-gqa", [17, 8], 7, "rocm:gfx942")
