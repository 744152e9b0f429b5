"""Compiling from a checkpoint: the model is traced from shape-only parameters (no weight is
read), and the compiled model's weights are streamed from the files when they are bound; the
result is the compile of the in-memory model, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from test_checkpoints_support import (
    HUB_ID,
    KEY,
    fake_hub_cache,
    save_tiny,
    snapshot,
    token_ids,
    write_ckpt,
)

import tessera
from tessera.checkpoints import open_checkpoint
from tessera.checkpoints.hf_files import WeightFiles
from tessera.context import make_context
from tessera.frontend import trace
from tessera.models.tiny import tiny_gemma

NAME = "gemma3-gqa"


def write(kind: str, model: Any, folder: Path) -> Path:
    """``model`` saved as a checkpoint of ``kind`` into ``folder``."""
    if kind == "ckpt":
        write_ckpt(model, folder)
    else:
        model.save_pretrained(folder, **({"max_shard_size": "20KB"} if kind == "sharded" else {}))
    return folder


def test_tracing_model_holds_no_weights(tmp_path: Path) -> None:
    reference = save_tiny(NAME, tmp_path)
    model = open_checkpoint(tmp_path).model_for_tracing()
    assert not model.training
    parameters = dict(model.named_parameters(remove_duplicate=False))
    assert parameters.keys() == dict(reference.named_parameters(remove_duplicate=False)).keys()
    for name, parameter in parameters.items():
        expected = reference.get_parameter(name)
        assert (parameter.shape, parameter.dtype) == (expected.shape, expected.dtype), name
        assert parameter.device.type == "cpu", name
        # One element of storage, broadcast: nothing of the weight is in memory.
        assert parameter.untyped_storage().nbytes() == parameter.element_size(), name
        assert set(parameter.stride()) == {0}, name
    assert model.lm_head.weight is model.model.embed_tokens.weight
    # The buffers derived from the config are the real ones.
    for name, buffer in reference.named_buffers():
        assert torch.equal(model.get_buffer(name), buffer), name


@pytest.mark.slow
# (Gemma 3: the compile tests below find the same cache key, which hashes the IR.)
@pytest.mark.parametrize("name", ["gemma1-mqa", "gemma2-gqa"])
def test_traced_ir_is_the_loaded_models(name: str, tmp_path: Path) -> None:
    save_tiny(name, tmp_path)
    checkpoint = open_checkpoint(tmp_path)
    shape_only = trace(checkpoint.model_for_tracing(), make_context())
    loaded = trace(checkpoint.load(), make_context())
    assert str(shape_only.module) == str(loaded.module)
    assert shape_only.weights == loaded.weights


def test_weights_are_read_when_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = save_tiny("gemma2-gqa", tmp_path, max_shard_size="20KB")
    checkpoint = open_checkpoint(tmp_path)
    weights = checkpoint.weights()
    state = reference.state_dict()
    assert set(weights) == set(state) and len(weights) == len(state)
    for key, tensor in state.items():
        assert torch.equal(weights[key], tensor), key
    # Nothing is cached: each look-up reads the file again.
    assert weights[KEY] is not weights[KEY]

    def no_reading(self: WeightFiles) -> None:
        raise AssertionError("a file was read")

    monkeypatch.setattr(WeightFiles, "reader", no_reading)
    assert KEY in weights and "model.no.such.weight" not in weights
    with pytest.raises(AssertionError, match="a file was read"):
        weights[KEY]


def test_weights_change_after_opening_is_reported(tmp_path: Path) -> None:
    reference = save_tiny("gemma2-gqa", tmp_path)
    weights = open_checkpoint(tmp_path).weights()
    changed = {key: tensor.clone() for key, tensor in reference.state_dict().items()}
    changed[KEY] = changed[KEY][:100].clone()
    changed.pop("lm_head.weight")
    from safetensors.torch import save_file

    save_file(changed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        tessera.CheckpointError, match=r"key '.*up_proj.*changed since.*\[100, 64\]"
    ):
        weights[KEY]


@pytest.fixture(scope="module")
def expected() -> tuple[Any, tessera.CompiledModel]:
    """The tiny model and its compile from memory, which every checkpoint compile must equal."""
    model = tiny_gemma(NAME)
    return model, tessera.compile(model)


def assert_same_compile(compiled: tessera.CompiledModel, expected: tuple[Any, Any]) -> None:
    """Same IR (the cache key hashes it) and the same weights: the same logits, bit for bit,
    and those of the PyTorch model."""
    model, reference = expected
    assert compiled.key == reference.key
    ids = token_ids(model.config.vocab_size)
    logits = compiled(ids).logits
    assert torch.equal(logits, reference(ids).logits)
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
    assert ((logits - eager).norm() / eager.norm()) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "sharded", "ckpt"])
def test_compiled_checkpoint_is_the_compiled_model(
    kind: str, tmp_path: Path, expected: tuple[Any, tessera.CompiledModel]
) -> None:
    folder = write(kind, expected[0], tmp_path / "checkpoint")
    before = snapshot(folder)
    compiled = tessera.compile(folder)
    assert snapshot(folder) == before
    assert_same_compile(compiled, expected)


@pytest.mark.slow
def test_compiles_a_hub_id_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expected: tuple[Any, tessera.CompiledModel]
) -> None:
    cache = tmp_path / "hub"
    fake_hub_cache(cache, write("single", expected[0], tmp_path / "saved"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    before = snapshot(cache)
    compiled = tessera.compile(HUB_ID)
    assert snapshot(cache) == before
    assert_same_compile(compiled, expected)


def test_compile_names_an_absent_hub_id_and_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(tessera.CheckpointError) as info:
        tessera.compile("google/gemma-2-2b")
    assert "google/gemma-2-2b" in str(info.value) and str(cache) in str(info.value)
    assert list(cache.iterdir()) == []
