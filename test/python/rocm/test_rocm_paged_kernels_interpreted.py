"""Generation's kernels (cache append, split-KV paged attention and its combine) built for AMD
devices and run in the kernel interpreter as the ROCm lowering receives them (after
``tessera-rocm-expand-math``), against the same float64 reference as the NVIDIA build
(``test/python/cuda/test_paged_kernels_interpreted.py``). Unrun on AMD hardware."""

from __future__ import annotations

import functools

import amd_interpreter  # noqa: F401  (registers the AMD rules)
import pytest
from test_paged_kernels_interpreted import CASES, PagedCase, check_append_then_paged_attention

from tessera.lowering.cuda.kernel import KernelModule
from tessera.lowering.rocm.device import Amd
from tessera.pipeline import run_pipeline


def _expand_math(km: KernelModule) -> None:
    run_pipeline(km.module, "builtin.module(tessera-rocm-expand-math)", verify_each=False)


@pytest.mark.parametrize("arch", ["gfx942", "gfx1100"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_append_then_paged_attention_matches_float64(arch: str, case: PagedCase) -> None:
    module = functools.partial(KernelModule, arch, device=Amd(arch))
    check_append_then_paged_attention(module, _expand_math, case)
