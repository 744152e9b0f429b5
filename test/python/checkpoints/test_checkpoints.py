"""Loading Hugging Face Gemma checkpoints: every generation, sharded, multimodal, dtypes.

Each test writes a tiny checkpoint with transformers' save_pretrained, loads it and checks every
tensor and the logits against the model it came from, and that the directory is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from test_checkpoints_support import (
    TINY,
    assert_same_model,
    edit_json,
    load_unchanged,
    rename_keys,
    rewrite_safetensors,
    save_tiny,
    tiny_multimodal,
    token_ids,
)
from test_checkpoints_support import (
    snapshot as snapshot_of,
)

from tessera.checkpoints import load_hf_checkpoint, open_checkpoint
from tessera.models.tiny import CONFIGS, tiny_gemma

MULTIMODAL_B = [
    ("language_model.model.", "model.language_model."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
]


def test_every_family_has_a_tiny_configuration() -> None:
    assert {CONFIGS[name]["generation"] for name in TINY} == {1, 2, 3}


@pytest.mark.parametrize("name", TINY)
def test_loads_every_tiny_gemma(name: str, tmp_path: Path) -> None:
    reference = save_tiny(name, tmp_path)
    model = load_unchanged(tmp_path)
    assert_same_model(model, reference)
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("name", ["gemma1-mqa", "gemma2-gqa", "gemma3-gqa"])
def test_loads_sharded_checkpoint(name: str, tmp_path: Path) -> None:
    reference = save_tiny(name, tmp_path, max_shard_size="20KB")
    assert not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    assert_same_model(load_unchanged(tmp_path), reference)


@pytest.mark.parametrize("name", ["gemma1-mha", "gemma2-gqa", "gemma3-gqa"])
def test_bf16_checkpoint_matches_transformers_from_pretrained(name: str, tmp_path: Path) -> None:
    # from_pretrained is the reference for the buffers too: its rotary frequencies stay f32
    # and its embedding scale is rounded to bf16, unlike a model converted with .to(bf16).
    original = save_tiny(name, tmp_path, dtype=torch.bfloat16)
    model = load_unchanged(tmp_path)
    assert model.dtype == torch.bfloat16
    reference = type(original).from_pretrained(tmp_path, dtype="auto", attn_implementation="eager")
    assert reference.dtype == torch.bfloat16
    assert_same_model(model, reference)


def test_dtype_override_converts_like_transformers(tmp_path: Path) -> None:
    original = save_tiny("gemma3-mqa-odd", tmp_path)
    model = load_unchanged(tmp_path, dtype=torch.bfloat16)
    reference = type(original).from_pretrained(
        tmp_path, dtype=torch.bfloat16, attn_implementation="eager"
    )
    assert_same_model(model, reference)
    assert_same_model(load_unchanged(tmp_path, dtype="bfloat16"), reference)


def test_bf16_checkpoint_loads_exactly_as_float32(tmp_path: Path) -> None:
    original = save_tiny("gemma2-gqa", tmp_path, dtype=torch.bfloat16)
    model = load_unchanged(tmp_path, dtype=torch.float32)
    assert model.dtype == torch.float32
    for key, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor.float()), key


def test_config_without_dtype_gives_float32(tmp_path: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path, dtype=torch.bfloat16)
    edit_json(tmp_path / "config.json", lambda config: config.pop("dtype"))
    assert load_unchanged(tmp_path).dtype == torch.float32


def test_older_torch_dtype_field_is_read(tmp_path: Path) -> None:
    save_tiny("gemma1-mqa", tmp_path)

    def rename(config: dict) -> None:
        config.pop("dtype")
        config["torch_dtype"] = "bfloat16"

    edit_json(tmp_path / "config.json", rename)
    assert load_unchanged(tmp_path).dtype == torch.bfloat16


def test_mixed_float_dtypes_are_converted_to_the_model_dtype(tmp_path: Path) -> None:
    reference = save_tiny("gemma2-gqa", tmp_path)
    key_f64, key_f16 = "model.layers.0.mlp.up_proj.weight", "model.norm.weight"

    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key_f64] = tensors[key_f64].double()
        tensors[key_f16] = tensors[key_f16].half()

    rewrite_safetensors(tmp_path / "model.safetensors", change)
    state = load_unchanged(tmp_path).state_dict()
    assert state[key_f64].dtype == torch.float32
    assert torch.equal(state[key_f64], reference.state_dict()[key_f64])
    assert torch.equal(state[key_f16], reference.state_dict()[key_f16].half().float())


def test_sdpa_choice_in_config_is_kept_except_for_gemma2(tmp_path: Path) -> None:
    for name in ("gemma1-mqa", "gemma2-gqa"):
        directory = tmp_path / name
        save_tiny(name, directory)
        edit_json(directory / "config.json", lambda c: c.update(attn_implementation="sdpa"))
        expected = "eager" if name == "gemma2-gqa" else "sdpa"
        assert load_unchanged(directory).config._attn_implementation == expected


def test_untied_head_is_loaded_separately(tmp_path: Path) -> None:
    base = tiny_gemma("gemma1-mqa")
    config = type(base.config).from_dict(
        base.config.to_dict() | {"tie_word_embeddings": False, "attn_implementation": "eager"}
    )
    reference = type(base)(config)
    reference.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        reference.lm_head.weight.copy_(torch.randn_like(reference.lm_head.weight))
    reference.eval().save_pretrained(tmp_path)
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")
    model = load_unchanged(tmp_path)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert_same_model(model, reference)


def test_present_head_equal_to_tied_embedding_is_accepted(tmp_path: Path) -> None:
    reference = save_tiny("gemma3-gqa", tmp_path)

    def add_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()

    rewrite_safetensors(tmp_path / "model.safetensors", add_head)
    assert_same_model(load_unchanged(tmp_path), reference)


def test_old_stored_rotary_frequencies_are_ignored(tmp_path: Path) -> None:
    reference = save_tiny("gemma1-mha", tmp_path)

    def add(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)

    rewrite_safetensors(tmp_path / "model.safetensors", add)
    assert_same_model(load_unchanged(tmp_path), reference)


def test_loads_text_model_of_multimodal_checkpoint(tmp_path: Path) -> None:
    reference = tiny_gemma("gemma3-gqa")
    tiny_multimodal(reference).save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    # What transformers 5 writes: Google's original layout.
    assert "language_model.model.embed_tokens.weight" in keys
    assert any(key.startswith("vision_tower.") for key in keys)
    assert any(key.startswith("multi_modal_projector.") for key in keys)
    model = load_unchanged(tmp_path)
    assert_same_model(model, reference)


def test_loads_multimodal_checkpoint_in_transformers_4_layout(tmp_path: Path) -> None:
    reference = tiny_gemma("gemma3-mqa-odd")
    tiny_multimodal(reference).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    rename_keys(path, MULTIMODAL_B)

    def add_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"].clone()

    rewrite_safetensors(path, add_head)
    assert "model.language_model.layers.0.mlp.up_proj.weight" in load_file(path)
    assert_same_model(load_unchanged(tmp_path), reference)


def test_loads_sharded_bf16_multimodal_checkpoint(tmp_path: Path) -> None:
    original = tiny_gemma("gemma3-gqa", dtype=torch.bfloat16)
    tiny_multimodal(original).save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = load_unchanged(tmp_path)
    assert model.dtype == torch.bfloat16
    for key, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key
    ids = token_ids(original.config.vocab_size)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_multimodal_top_level_tie_flag_governs_the_head(tmp_path: Path) -> None:
    reference = tiny_gemma("gemma3-gqa")
    tiny_multimodal(reference).save_pretrained(tmp_path)

    def untie(config: dict) -> None:
        config["tie_word_embeddings"] = False
        config["text_config"]["tie_word_embeddings"] = True

    edit_json(tmp_path / "config.json", untie)
    head = torch.randn_like(reference.lm_head.weight)

    def add_head(tensors: dict[str, torch.Tensor]) -> None:
        tensors["language_model.lm_head.weight"] = head

    rewrite_safetensors(tmp_path / "model.safetensors", add_head)
    model = load_unchanged(tmp_path)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, head)


def test_follows_symlinks_like_the_hugging_face_cache(tmp_path: Path) -> None:
    # The hub cache keeps files as blobs and links them from a snapshot folder.
    saved, blobs, snapshot = tmp_path / "saved", tmp_path / "blobs", tmp_path / "snapshot"
    reference = save_tiny("gemma2-gqa", saved, max_shard_size="20KB")
    blobs.mkdir()
    snapshot.mkdir()
    for index, file in enumerate(sorted(saved.iterdir())):
        blob = blobs / f"blob{index}"
        file.rename(blob)
        (snapshot / file.name).symlink_to(blob)
    before = snapshot_of(blobs)
    assert_same_model(load_unchanged(snapshot), reference)
    assert snapshot_of(blobs) == before


def test_accepts_path_as_string(tmp_path: Path) -> None:
    reference = save_tiny("gemma1-mqa", tmp_path)
    assert_same_model(load_hf_checkpoint(str(tmp_path)), reference)


def test_loaded_model_is_a_transformers_model(tmp_path: Path) -> None:
    save_tiny("gemma3-gqa", tmp_path)
    model = load_unchanged(tmp_path)
    assert isinstance(model, transformers.Gemma3ForCausalLM)
    assert all(parameter.device.type == "cpu" for parameter in model.parameters())


def test_generation_config_of_the_folder(tmp_path: Path) -> None:
    # Gemma's generation_config.json ends generation at <end_of_turn> (107) too.
    save_tiny("gemma2-gqa", tmp_path)
    edit_json(tmp_path / "generation_config.json", lambda c: c.update(eos_token_id=[1, 107]))
    checkpoint = open_checkpoint(tmp_path)
    assert load_unchanged(tmp_path).generation_config.eos_token_id == [1, 107]
    assert checkpoint.model_for_tracing().generation_config.eos_token_id == [1, 107]
    (tmp_path / "generation_config.json").unlink()
    assert load_unchanged(tmp_path).generation_config.eos_token_id == 1
