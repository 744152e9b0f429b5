"""The CUDA plan lowers Gemma's "add, then norm" as one kernel where the sum lives on: every
residual update that feeds a norm and is read again later, and no other add; where a norm
makes what is added (Gemma 2 and 3's post-norms), that norm joins the kernel too. (The numbers
of the fused kernels are checked by the kernel tests and the emulated whole-model tests.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tessera
from tessera.models.tiny import tiny_gemma


@pytest.mark.parametrize("name", ["gemma1-mqa", "gemma2-gqa", "gemma3-gqa"])
def test_residual_adds_fuse_into_the_following_norm(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    model = tiny_gemma(name, dtype=torch.bfloat16)
    layers = model.config.num_hidden_layers
    compiled = tessera.compile(model, target="cuda:sm_90")
    steps = compiled.manifest.program("prefill").steps
    fused = [s for s in steps if "rms_norm" in s.kernel and "_residual_" in s.kernel]
    plain = [s for s in steps if "rms_norm" in s.kernel and "_residual_" not in s.kernel]
    prenormed = [s for s in fused if "_prenorm_" in s.kernel]
    # Per layer: the attention half's sum feeds the MLP half's norm, and the layer's output
    # feeds the next layer's input norm; the last layer's output feeds only the final norm.
    assert len(fused) == 2 * layers - 1
    # Gemma 2 and 3 normalise each half's output before adding it: that norm is in the kernel.
    assert len(prenormed) == (0 if name.startswith("gemma1") else 2 * layers - 1)
    norms = len(fused) + len(prenormed) + len(plain)
    assert norms == compiled.fused_ops()["tessera.norm.rms"]
