"""Configs shaped like the published Gemma checkpoints' config.json files (older field names,
partial multimodal text configs that rely on transformers' defaults) build the right model.

Models are built on the meta device, so full-size configs cost no memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.checkpoints.hf_config import read_model_spec
from tessera.checkpoints.hf_loader import build_skeleton

GEMMA_2B = {
    "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 16384,
    "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 8,
    "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
    "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
}  # fmt: skip

GEMMA2_2B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4",
    "use_cache": True, "vocab_size": 256000,
}  # fmt: skip

# A multimodal Gemma 3 config as published: the text config names only what differs from
# Gemma3TextConfig's defaults.
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {
        "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
        "patch_size": 14, "vision_use_head": False,
    },
}  # fmt: skip


def write(directory: Path, config: dict[str, Any]) -> Path:
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def build(directory: Path, config: dict[str, Any], dtype: torch.dtype | None = None) -> Any:
    return build_skeleton(read_model_spec(write(directory, config), dtype))


def shapes(model: Any) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in model.state_dict().items()}


def test_gemma_2b_config(tmp_path: Path) -> None:
    model = build(tmp_path, GEMMA_2B)
    assert type(model).__name__ == "GemmaForCausalLM"
    assert model.dtype == torch.bfloat16
    found = shapes(model)
    assert found["model.embed_tokens.weight"] == [256000, 2048]
    assert found["model.layers.17.self_attn.k_proj.weight"] == [256, 2048]
    assert found["model.layers.0.mlp.gate_proj.weight"] == [16384, 2048]
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_gemma2_2b_config_is_built_eager(tmp_path: Path) -> None:
    model = build(tmp_path, GEMMA2_2B | {"attn_implementation": "sdpa"})
    assert type(model).__name__ == "Gemma2ForCausalLM"
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    assert model.config.final_logit_softcapping == 30.0
    assert shapes(model)["model.layers.25.self_attn.q_proj.weight"] == [2048, 2304]


def test_gemma3_4b_multimodal_config_builds_its_text_model(tmp_path: Path) -> None:
    model = build(tmp_path, GEMMA3_4B, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.dtype == torch.float32
    config = model.config
    assert config.model_type == "gemma3_text"
    assert config.layer_types.count("full_attention") == 5  # layers 5, 11, ..., 29 of 34
    assert config.layer_types[5] == "full_attention"
    assert config.rope_parameters["full_attention"]["factor"] == 8.0
    assert config.rope_parameters["sliding_attention"]["rope_type"] == "default"
    found = shapes(model)
    assert found["model.embed_tokens.weight"] == [262208, 2560]
    assert found["model.layers.33.self_attn.q_proj.weight"] == [2048, 2560]
    assert found["model.layers.33.self_attn.q_norm.weight"] == [256]
    assert not any("vision" in key for key in found)
    assert model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize("config", [GEMMA_2B, GEMMA2_2B, GEMMA3_4B])
def test_published_dtype_is_the_default(tmp_path: Path, config: dict[str, Any]) -> None:
    expected = {"bfloat16": torch.bfloat16, "float32": torch.float32}[config["torch_dtype"]]
    assert read_model_spec(write(tmp_path, config), None).dtype == expected
