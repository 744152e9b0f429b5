"""Target names as users write them: resolution, portable CPU levels, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

import tessera
from tessera.models.tiny import tiny_gemma
from tessera.target import resolve


def test_names_resolve_to_their_target() -> None:
    assert resolve("cpu").name == "cpu"
    assert resolve("cpu:avx2").name == "cpu:avx2"
    assert resolve("cuda:sm_80").name == "cuda:sm_80"
    # Hopper without its arch-specific instructions (no wgmma), and with them.
    assert resolve("cuda:sm_90").name == "cuda:sm_90"
    assert resolve("cuda:sm_90a").name == "cuda:sm_90a"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tpu", "unknown target 'tpu'"),
        ("cpu:avx9000", "unknown CPU instruction set 'avx9000'"),
        ("cuda:sm_12", "unknown CUDA arch 'sm_12'"),
    ],
)
def test_unknown_names_are_refused_by_name(name: str, message: str) -> None:
    with pytest.raises(tessera.TesseraError, match=message):
        resolve(name)


def test_a_portable_cpu_build_records_its_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    compiled = tessera.compile(tiny_gemma("gemma1-mqa"), target="cpu:avx2")
    assert compiled.target == "cpu:avx2"
    features = set(compiled.manifest.target.features)
    assert "avx2" in features and not any(f.startswith("avx512") for f in features)
