"""Bad checkpoints: each must fail with a CheckpointError naming the file and tensor at fault,
before any tensor is loaded, and leave the directory byte-identical with no new files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_checkpoints_support import (
    KEY,
    edit_json,
    load_fails,
    rename_keys,
    rewrite_safetensors,
    save_tiny,
    shard_of,
    tiny_multimodal,
)

from tessera import CheckpointError
from tessera.checkpoints import load_hf_checkpoint
from tessera.checkpoints.hf_loader import Part, _check_tensor
from tessera.checkpoints.stored import StoredTensor
from tessera.models.tiny import tiny_gemma


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A single-file tiny Gemma 2 checkpoint."""
    save_tiny("gemma2-gqa", tmp_path)
    return tmp_path


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    """A sharded tiny Gemma 2 checkpoint."""
    save_tiny("gemma2-gqa", tmp_path, max_shard_size="20KB")
    return tmp_path


# --- config.json -------------------------------------------------------------------------------


def test_missing_config(checkpoint: Path) -> None:
    (checkpoint / "config.json").unlink()
    load_fails(checkpoint, "config.json", "missing")


def test_config_is_not_json(checkpoint: Path) -> None:
    (checkpoint / "config.json").write_text('{"model_type": "gemma2",')
    load_fails(checkpoint, "config.json", "AutoConfig", "not a valid JSON file")


def test_config_is_not_an_object(checkpoint: Path) -> None:
    (checkpoint / "config.json").write_text("[1, 2]")
    load_fails(checkpoint, "config.json", "model_type")


def test_unknown_model_type(checkpoint: Path) -> None:
    edit_json(checkpoint / "config.json", lambda c: c.update(model_type="llama"))
    load_fails(checkpoint, "config.json", "'llama'", "gemma, gemma2, gemma3, gemma3_text")


def test_missing_model_type(checkpoint: Path) -> None:
    edit_json(checkpoint / "config.json", lambda c: c.pop("model_type"))
    load_fails(checkpoint, "config.json", "model_type")


def test_invalid_config_value(checkpoint: Path) -> None:
    edit_json(checkpoint / "config.json", lambda c: c.update(hidden_size="wide"))
    load_fails(checkpoint, "config.json", "hidden_size", "'wide'")


def test_config_dtype_that_is_not_a_float(checkpoint: Path) -> None:
    edit_json(checkpoint / "config.json", lambda c: c.update(dtype="int8"))
    load_fails(checkpoint, "config.json", "'int8'")


def test_quantized_checkpoint(checkpoint: Path) -> None:
    edit_json(
        checkpoint / "config.json", lambda c: c.update(quantization_config={"quant_method": "fp8"})
    )
    load_fails(checkpoint, "config.json", "quantiz")


def test_multimodal_without_text_config(tmp_path: Path) -> None:
    # transformers' default text config (Gemma 3 4B's sizes) does not fit the tiny weights.
    tiny_multimodal(tiny_gemma("gemma3-gqa")).save_pretrained(tmp_path)
    edit_json(tmp_path / "config.json", lambda c: c.pop("text_config"))
    load_fails(
        tmp_path,
        "model.safetensors",
        "key 'language_model.model.embed_tokens.weight'",
        "found shape [192, 64]",
        "expects [262208,",
    )


def test_generation_config_is_not_json(checkpoint: Path) -> None:
    (checkpoint / "generation_config.json").write_text('{"eos_token_id": ')
    load_fails(checkpoint, "generation_config.json", "GenerationConfig cannot read it")


def test_bad_dtype_argument(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="int8"):
        load_hf_checkpoint(checkpoint, dtype="int8")
    with pytest.raises(ValueError, match=r"torch\.int32"):
        load_hf_checkpoint(checkpoint, dtype=torch.int32)
    with pytest.raises(TypeError, match="int"):
        load_hf_checkpoint(checkpoint, dtype=16)  # type: ignore[arg-type]


def test_path_is_not_a_directory(checkpoint: Path) -> None:
    load_fails(checkpoint / "config.json", "config.json", "is a file", "checkpoint folder")


# --- which files -------------------------------------------------------------------------------


def test_pickle_weights_are_never_loaded(tmp_path: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    # Unpickling this would create a file in the checkpoint directory.
    marker = tmp_path / "unpickled"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_TouchOnLoad(str(marker))))
    load_fails(tmp_path, "pytorch_model.bin", "only safetensors", "pickle")
    assert not marker.exists()


class _TouchOnLoad:
    """An object whose unpickling touches a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.path),))


def test_no_weights(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").unlink()
    load_fails(checkpoint, "model.safetensors", "neither")


def test_missing_shard(sharded: Path) -> None:
    shard = shard_of(sharded, KEY)
    shard.unlink()
    load_fails(sharded, "model.safetensors.index.json", shard.name, "do not exist")


def test_index_is_not_json(sharded: Path) -> None:
    (sharded / "model.safetensors.index.json").write_text("{")
    load_fails(sharded, "model.safetensors.index.json", "not valid JSON")


def test_index_without_weight_map(sharded: Path) -> None:
    edit_json(sharded / "model.safetensors.index.json", lambda i: i.pop("weight_map"))
    load_fails(sharded, "model.safetensors.index.json", "weight_map")


def test_index_naming_a_file_outside_the_directory(sharded: Path) -> None:
    name = "../" + shard_of(sharded, KEY).name
    edit_json(
        sharded / "model.safetensors.index.json", lambda i: i["weight_map"].update({KEY: name})
    )
    load_fails(sharded, "model.safetensors.index.json", KEY, "not a plain file name")


def test_index_lists_a_tensor_its_shard_lacks(sharded: Path) -> None:
    shard = shard_of(sharded, KEY)
    rewrite_safetensors(shard, lambda tensors: tensors.pop(KEY))
    load_fails(sharded, shard.name, KEY, "does not hold it")


def test_shard_holds_a_tensor_the_index_lacks(sharded: Path) -> None:
    # A tensor sharing its shard with others (a shard the index no longer names is not read).
    key = "model.layers.1.post_feedforward_layernorm.weight"
    assert len(load_file(shard_of(sharded, key))) > 1
    edit_json(sharded / "model.safetensors.index.json", lambda i: i["weight_map"].pop(key))
    load_fails(sharded, "model.safetensors.index.json", key, "does not list it")


def test_tensor_stored_in_two_shards(sharded: Path) -> None:
    home = shard_of(sharded, KEY)
    other = next(path for path in sorted(sharded.glob("model-*.safetensors")) if path != home)
    copy = load_file(home)[KEY]
    rewrite_safetensors(other, lambda tensors: tensors.update({KEY: copy}))
    first, second = sorted([home.name, other.name])
    load_fails(
        sharded, "model.safetensors.index.json", f"key '{KEY}'", f"both {first} and {second}"
    )


# --- tensors against the model ----------------------------------------------------------------


def test_missing_tensor(checkpoint: Path) -> None:
    rewrite_safetensors(checkpoint / "model.safetensors", lambda tensors: tensors.pop(KEY))
    load_fails(checkpoint, "model.safetensors", f"key '{KEY}'", "missing", "[112, 64]")


def test_missing_tensor_of_sharded_checkpoint(sharded: Path) -> None:
    rewrite_safetensors(shard_of(sharded, KEY), lambda tensors: tensors.pop(KEY))
    edit_json(sharded / "model.safetensors.index.json", lambda i: i["weight_map"].pop(KEY))
    load_fails(sharded, "model.safetensors.index.json", f"key '{KEY}'", "missing")


def test_renamed_tensor_names_both(checkpoint: Path) -> None:
    def rename(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.layers.1.mlp.upproj.weight"] = tensors.pop(KEY)

    rewrite_safetensors(checkpoint / "model.safetensors", rename)
    load_fails(checkpoint, f"key '{KEY}'", "missing", "'model.layers.1.mlp.upproj.weight'")


def test_unexpected_tensors(checkpoint: Path) -> None:
    def add(tensors: dict[str, torch.Tensor]) -> None:
        for index in range(7):
            tensors[f"model.extra.{index}"] = torch.zeros(2)

    rewrite_safetensors(checkpoint / "model.safetensors", add)
    load_fails(
        checkpoint,
        "model.safetensors",
        "7 tensor(s)",
        "'model.extra.0'",
        "'model.extra.4'",
        "2 more",
    )


def test_wrong_shape(checkpoint: Path) -> None:
    def reshape(tensors: dict[str, torch.Tensor]) -> None:
        tensors[KEY] = tensors[KEY][:100].clone()

    rewrite_safetensors(checkpoint / "model.safetensors", reshape)
    load_fails(checkpoint, "model.safetensors", f"key '{KEY}'", "[100, 64]", "expects [112, 64]")


def test_wrong_shape_in_a_shard(sharded: Path) -> None:
    shard = shard_of(sharded, KEY)

    def reshape(tensors: dict[str, torch.Tensor]) -> None:
        tensors[KEY] = tensors[KEY][:, :60].clone()

    rewrite_safetensors(shard, reshape)
    load_fails(sharded, shard.name, f"key '{KEY}'", "[112, 60]", "expects [112, 64]")


@pytest.mark.parametrize(("dtype", "name"), [(torch.int32, "I32"), (torch.bool, "BOOL")])
def test_integer_or_bool_where_float_expected(
    checkpoint: Path, dtype: torch.dtype, name: str
) -> None:
    def retype(tensors: dict[str, torch.Tensor]) -> None:
        tensors[KEY] = tensors[KEY].to(dtype)

    rewrite_safetensors(checkpoint / "model.safetensors", retype)
    load_fails(checkpoint, "model.safetensors", f"key '{KEY}'", name, "torch.float32")


def test_non_float_model_tensor_needs_the_same_dtype() -> None:
    # No Gemma keeps an integer tensor in its state dict; the rule is checked on its own.
    buffer = torch.empty(3, dtype=torch.int32, device="meta")

    def source(dtype: str) -> Part:
        return Part(StoredTensor("counts", Path("model.safetensors"), dtype, (3,)))

    _check_tensor(source("I32"), "counts", buffer, "Model")
    for stored in ("I64", "F32"):
        with pytest.raises(CheckpointError, match=f"'counts'.*stores {stored}.*torch.int32"):
            _check_tensor(source(stored), "counts", buffer, "Model")


def test_untied_head_missing(tmp_path: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path)
    edit_json(tmp_path / "config.json", lambda c: c.update(tie_word_embeddings=False))
    load_fails(tmp_path, "model.safetensors", "key 'lm_head.weight'", "tie_word_embeddings")


def test_head_differs_from_tied_embedding(checkpoint: Path) -> None:
    def add_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] + 1

    rewrite_safetensors(checkpoint / "model.safetensors", add_head)
    load_fails(checkpoint, "model.safetensors", "key 'lm_head.weight'", "differs", "tie")


# --- multimodal layouts ------------------------------------------------------------------------


@pytest.fixture
def multimodal(tmp_path: Path) -> Path:
    """A tiny multimodal Gemma 3 checkpoint as transformers 5 writes it."""
    tiny_multimodal(tiny_gemma("gemma3-gqa")).save_pretrained(tmp_path)
    return tmp_path


def test_multimodal_missing_tensor_named_as_in_checkpoint(multimodal: Path) -> None:
    key = "language_model.model.layers.0.self_attn.q_norm.weight"
    rewrite_safetensors(multimodal / "model.safetensors", lambda tensors: tensors.pop(key))
    load_fails(
        multimodal, f"key '{key}'", "model key 'model.layers.0.self_attn.q_norm.weight'", "[32]"
    )


def test_multimodal_mixing_layouts(multimodal: Path) -> None:
    def add(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.language_model.norm.weight"] = torch.zeros(64)

    rewrite_safetensors(multimodal / "model.safetensors", add)
    load_fails(multimodal, "model.safetensors", "mixes two layouts")


def test_multimodal_without_text_tensors(multimodal: Path) -> None:
    rename_keys(multimodal / "model.safetensors", [("language_model.model.", "text.")])
    load_fails(multimodal, "model.safetensors", "no text-model tensors")


def test_multimodal_unknown_tensor_outside_ignored_parts(multimodal: Path) -> None:
    def add(tensors: dict[str, torch.Tensor]) -> None:
        tensors["audio_tower.weight"] = torch.zeros(2)

    rewrite_safetensors(multimodal / "model.safetensors", add)
    load_fails(multimodal, "model.safetensors", "key 'audio_tower.weight'", "1 tensor(s)")


def test_multimodal_weights_under_a_text_config_are_reported(multimodal: Path) -> None:
    # config.json replaced by the text model's own config: the tensors' names do not fit it.
    edit_json(multimodal / "config.json", lambda c: c.update(c.pop("text_config")))
    load_fails(
        multimodal,
        "model.safetensors",
        "key 'model.embed_tokens.weight'",
        "missing",
        "'language_model.model.",
    )


def test_config_the_model_cannot_be_built_from(multimodal: Path) -> None:
    edit_json(multimodal / "config.json", lambda c: c.update(model_type="gemma3_text"))
    load_fails(multimodal, "Gemma3ForCausalLM")
