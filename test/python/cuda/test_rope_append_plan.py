"""The CUDA plan lowers a cached step's attention prologue as one launch
(``kernels/rope_append.py``): per layer, the ropes of q and k and the append of the new keys and
values, with Gemma 3's q/k norms too. (The
fused kernel's numbers are checked by its interpreter test and the emulated generation
tests.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tessera
from tessera.models.tiny import tiny_gemma

SEPARATE = ("tessera_kv_append", "tessera_rope_", "tessera_rope2_")


@pytest.mark.parametrize("name", ["gemma1-mqa", "gemma2-gqa", "gemma3-gqa"])
def test_each_layer_has_one_prologue_launch(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    model = tiny_gemma(name, dtype=torch.bfloat16)
    layers = model.config.num_hidden_layers
    compiled = tessera.compile(model, target="cuda:sm_90")
    for program in ("decode", "decode_greedy"):
        kernels = [s.kernel for s in compiled.manifest.program(program).steps]
        fused = [k for k in kernels if k.startswith("tessera_rope_append_")]
        assert len(fused) == layers, program
        assert all(("_qknorm_" in k) == name.startswith("gemma3") for k in fused)
        assert not [k for k in kernels if k.startswith(SEPARATE) and k not in fused], program
        if name.startswith("gemma3"):
            # the per-head norms went into the prologue: only the hidden-size norms are left
            widths = {k.split("_")[4] for k in kernels if k.startswith("tessera_rms_norm_")}
            assert widths == {str(model.config.hidden_size)}, program
    # Without a cache there is nothing to append: the ropes stay ropes.
    prefill = [s.kernel for s in compiled.manifest.program("prefill").steps]
    assert any(k.startswith("tessera_rope") for k in prefill)
    assert not any(k.startswith("tessera_rope_append_") for k in prefill)
