"""The tuning tables (``lowering/cuda/tuning.py``): the shipped table overlaid by the user's,
checked field by field, read by the wgmma rule, and part of the compile cache's key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tessera
from tessera.errors import LoweringError
from tessera.lowering.cuda import tuning
from tessera.lowering.cuda.target import CudaTarget
from tessera.models.tiny import tiny_gemma


def _table(path: Path, entry_map: dict, **fields: object) -> Path:
    body = json.loads(tuning.table_json("sm_90a", "a card", "2026-12-07", "abc", entry_map))
    body.update(fields)
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tuning" / "sm_90a.json"
    path.parent.mkdir()
    monkeypatch.setenv(tuning.USER_ENV, str(path.parent))
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    return path


def test_the_users_table_overlays_the_shipped_one(user: Path) -> None:
    shipped = tuning.load("sm_90a")
    key = "wgmma/bf16/n48/k64/plain"
    _table(user, {key: {"block_m": 64, "block_n": 128, "stages": 2}})
    merged = tuning.load("sm_90a")
    assert merged.get(key) == {"block_m": 64, "block_n": 128, "stages": 2}
    assert merged.sources[-1] == str(user)
    assert {k: v for k, v in merged.entries.items() if k != key} == {
        k: v for k, v in shipped.entries.items() if k != key
    }
    assert merged.fingerprint() != shipped.fingerprint()
    assert tuning.load("gfx942").sources == ()  # another arch reads its own file


@pytest.mark.parametrize(
    ("fields", "entries", "message"),
    [
        ({"format": "other"}, {}, "format: expected 'tessera-tuning'"),
        ({"version": 9}, {}, "version: expected 1, found 9"),
        ({"arch": "sm_80"}, {}, "arch: the table is for 'sm_80', the compile for 'sm_90a'"),
        ({}, {"wgmma/bf16/n8/k8/plain": {"stages": 0}}, "entries.wgmma/bf16/n8/k8/plain"),
        ({"entries": [1]}, {}, "entries: expected an object"),
    ],
)
def test_a_malformed_table_is_named(user: Path, fields: dict, entries: dict, message: str) -> None:
    _table(user, entries, **fields)
    with pytest.raises(LoweringError, match=f"tuning table {user}: {message}"):
        tuning.load("sm_90a")


def test_the_wgmma_rule_takes_the_tuned_tile_and_recompiles(user: Path) -> None:
    model = tiny_gemma("gemma2-gqa", dtype=torch.bfloat16)

    def gemms() -> set[str]:
        compiled = tessera.compile(model, target="cuda:sm_90a")
        return {s.kernel for s in compiled.manifest.program("prefill").steps if "wgmma" in s.kernel}

    before = gemms()
    # Untuned: the warp-specialized kernel; a tuned entry without ``consumers`` is a
    # single-warpgroup tile, its other fields from that kernel's default.
    assert "gemm_wgmma_bf16_n48_k64_nk_128x256x64s3g8c2" in before
    fingerprint = CudaTarget("sm_90a").fingerprint()
    _table(user, {tuning.wgmma_key("bf16", 48, 64, False): {"block_n": 64, "stages": 4}})
    assert CudaTarget("sm_90a").fingerprint() != fingerprint
    after = gemms()
    assert "gemm_wgmma_bf16_n48_k64_nk_128x64x64s4g8" in after
    assert before - after == {"gemm_wgmma_bf16_n48_k64_nk_128x256x64s3g8c2"}


def test_the_shipped_h100_table_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table timed on an H100 ships with the compiler and covers the Gemma-2B shapes."""
    monkeypatch.setenv(tuning.USER_ENV, str(tmp_path))  # no user table
    shipped = tuning.load("sm_90a")
    assert shipped.sources == (str(tuning.SHIPPED / "sm_90a.json"),)
    for n, k, gated in ((2048, 2048, False), (16384, 2048, True), (256000, 2048, False)):
        entry = shipped.get(tuning.wgmma_key("bf16", n, k, gated))
        assert entry is not None
        assert set(entry) == {"block_m", "block_n", "stages", "consumers"}


def test_the_decode_gemvs_take_their_tuned_tiles(user: Path) -> None:
    """A GEMV entry (``tuning.gemv_key``) sets the tile of its shape and row class in the
    decode programs: split K for the down projection; the sibling q/k/v GEMV takes its
    parts' tiles only where they agree on a block size."""
    model = tiny_gemma("gemma2-gqa", dtype=torch.bfloat16)

    def gemvs() -> set[str]:
        compiled = tessera.compile(model, target="cuda:sm_90a")
        steps = compiled.manifest.program("decode").steps
        return {s.kernel for s in steps if s.kernel.startswith("gemm_gemv")}

    before = gemvs()
    assert "gemm_gemv_bf16_n64_k112_nk_r1c1w2u8_early" in before
    down = tuning.gemv_key("bf16", 64, 112, False, 1)
    q = tuning.gemv_key("bf16", 96, 64, False, 1)
    _table(user, {down: {"warps": 4, "unroll": 2, "splits": 2}, q: {"warps": 8}})
    after = gemvs()
    assert "gemm_gemv_bf16_n64_k112_nk_r1c1w4u2k2_early" in after
    assert "gemm_gemv_bf16_n64_k112_nk_r1c1w2u8_early" not in after
    # q's entry asks 8 warps where k's and v's keep 2: the siblings stay untuned
    assert {k for k in after if "siblings" in k} == {k for k in before if "siblings" in k}
    # the batch row class has no entry of its own
    assert "gemm_gemv_bf16_n64_k112_nk_r8c2w4u4" in after


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"block_m": 64}, "a GEMV tuning entry names block_m"),
        ({"warps": 3, "splits": 2}, "splits must divide warps"),
    ],
)
def test_a_bad_gemv_entry_is_refused(user: Path, entry: dict, message: str) -> None:
    key = tuning.gemv_key("bf16", 64, 112, False, 1)
    _table(user, {key: entry})
    with pytest.raises(LoweringError, match=f"tuning entry {key} \\(from .*{user}\\): .*{message}"):
        tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda:sm_90a")
