"""Naming a checkpoint as ``from_pretrained`` does: a local folder, or a Hub id resolved from the
local Hugging Face cache without network access; an id absent from the cache is an error naming
the id and the cache folder, and nothing is downloaded or written."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from test_checkpoints_support import (
    COMMIT,
    HUB_ID,
    assert_same_model,
    fake_hub_cache,
    save_tiny,
    snapshot,
)

from tessera import CheckpointError
from tessera.checkpoints import load_hf_checkpoint, resolve_checkpoint


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, made huggingface_hub's default for the test."""
    folder = tmp_path / "hub"
    folder.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    return folder


def test_hub_id_loads_from_the_cache(tmp_path: Path, cache: Path) -> None:
    reference = save_tiny("gemma2-gqa", tmp_path / "saved", max_shard_size="20KB")
    folder = fake_hub_cache(cache, tmp_path / "saved")
    assert resolve_checkpoint(HUB_ID) == folder
    before = snapshot(cache)
    assert_same_model(load_hf_checkpoint(HUB_ID), reference)
    assert snapshot(cache) == before


def test_explicit_cache_folder(tmp_path: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path / "saved")
    folder = fake_hub_cache(tmp_path / "elsewhere", tmp_path / "saved")
    assert resolve_checkpoint(HUB_ID, cache_dir=tmp_path / "elsewhere") == folder
    assert folder.name == COMMIT


def test_absent_hub_id_names_the_id_and_the_cache(cache: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_hf_checkpoint("google/gemma-2-2b")
    message = str(info.value)
    assert message.startswith("google/gemma-2-2b: ")
    assert f"local cache {cache} " in message and "never downloaded" in message
    assert list(cache.iterdir()) == []


def test_id_in_the_cache_without_a_snapshot_of_main(tmp_path: Path, cache: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path / "saved")
    fake_hub_cache(cache, tmp_path / "saved")
    (cache / ("models--" + HUB_ID.replace("/", "--")) / "refs" / "main").unlink()
    with pytest.raises(CheckpointError, match=f"{HUB_ID}: is neither a local folder"):
        resolve_checkpoint(HUB_ID)


def test_local_folder_wins_over_a_hub_id(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = save_tiny("gemma1-mqa", tmp_path / HUB_ID)
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(HUB_ID) == Path(HUB_ID)
    assert_same_model(load_hf_checkpoint(HUB_ID), reference)


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "a/b/c", "two words"])
def test_missing_path_that_is_no_hub_id(name: str, cache: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(name)


def test_a_path_object_is_never_a_hub_id(cache: Path) -> None:
    with pytest.raises(CheckpointError, match=f"{HUB_ID}: does not exist"):
        resolve_checkpoint(Path(HUB_ID))


def test_a_file_that_is_no_ckpt(tmp_path: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: is a file"):
        resolve_checkpoint(tmp_path / "model.safetensors")
