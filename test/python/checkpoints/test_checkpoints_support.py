"""Helpers shared by the checkpoint tests: writing tiny checkpoints (Hugging Face safetensors,
gemma_pytorch .ckpt, a Hugging Face cache), corrupting them, and proving the loader left the
directory untouched."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import seeds
import torch
import transformers
from safetensors.torch import load_file, save_file

from tessera import CheckpointError
from tessera.checkpoints import load_hf_checkpoint
from tessera.models.tiny import CONFIGS, tiny_gemma

# A SigLIP vision tower small enough to build in milliseconds; its weights are never loaded.
TINY_VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=16,
    patch_size=8,
)


def parameters(config: dict) -> int:
    """About how many weights a configuration has (embedding, attention, MLP)."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads, head_dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    return config["vocab_size"] * hidden + layers * (
        attention + 3 * hidden * config["intermediate_size"]
    )


# The tiny configurations; the real-shape ones (for GPU benchmarks) hold gigabytes.
TINY = sorted(name for name, config in CONFIGS.items() if parameters(config) < 10**7)


# A tensor of the tiny "gemma2-gqa" model, [112, 64], large enough to get a shard of its own.
KEY = "model.layers.1.mlp.up_proj.weight"


def shard_of(directory: Path, key: str) -> Path:
    """The shard a sharded checkpoint's index names for ``key``."""
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    return directory / index["weight_map"][key]


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``directory`` with its SHA-256 (files) and mtime."""
    state: dict[str, tuple[str, int]] = {}
    for root, folders, files in os.walk(directory):
        for name in folders + files:
            path = Path(root) / name
            relative = str(path.relative_to(directory))
            if path.is_dir():
                state[relative] = ("<dir>", path.stat().st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[relative] = (digest, path.stat().st_mtime_ns)
    return state


def load_unchanged(directory: Path, **kwargs: Any) -> Any:
    """Load the checkpoint and check that the directory is byte-identical afterwards."""
    before = snapshot(directory)
    model = load_hf_checkpoint(directory, **kwargs)
    assert snapshot(directory) == before
    return model


def load_fails(directory: Path, *fragments: str, **kwargs: Any) -> str:
    """Loading must raise CheckpointError whose message holds every fragment, and leave the
    directory byte-identical with no new files."""
    before = snapshot(directory)
    with pytest.raises(CheckpointError) as info:
        load_hf_checkpoint(directory, **kwargs)
    assert snapshot(directory) == before
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


def save_tiny(name: str, directory: Path, dtype: torch.dtype = torch.float32, **save: Any) -> Any:
    """Save the named tiny Gemma into ``directory`` with save_pretrained; returns the model."""
    model = tiny_gemma(name, dtype=dtype)
    model.save_pretrained(directory, **save)
    return model


def tiny_multimodal(text_model: Any) -> Any:
    """A Gemma3ForConditionalGeneration whose text model has ``text_model``'s weights."""
    config = transformers.Gemma3Config(
        text_config=text_model.config.to_dict(), vision_config=TINY_VISION, mm_tokens_per_image=4
    )
    # Its vision weights are drawn from the test's seed (conftest.py); they are ignored.
    model = transformers.Gemma3ForConditionalGeneration(config)
    model.model.language_model.load_state_dict(text_model.model.state_dict())
    return model.to(text_model.dtype).eval()


def rewrite_safetensors(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Rewrite a safetensors file after ``change`` edits its tensors in place (test setup)."""
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def rename_keys(path: Path, renames: list[tuple[str, str]]) -> None:
    """Rewrite a safetensors file with every name prefix ``old`` replaced by ``new``."""

    def change(tensors: dict[str, torch.Tensor]) -> None:
        for key in list(tensors):
            for old, new in renames:
                if key.startswith(old):
                    tensors[new + key[len(old) :]] = tensors.pop(key)
                    break

    rewrite_safetensors(path, change)


def write_raw_safetensors(path: Path, header: dict[str, Any], data: bytes) -> None:
    """A safetensors file with exactly this header and data section, however wrong."""
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a JSON file after ``change`` edits it in place (test setup)."""
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def token_ids(vocab_size: int) -> torch.Tensor:
    """Token ids drawn from the test's seed, batch 2 × 9."""
    return torch.randint(0, vocab_size, (2, 9), generator=seeds.generator())


def assert_same_model(loaded: Any, reference: Any) -> None:
    """Same class, same tensors (parameters, persistent and derived buffers, bit for bit, same
    dtypes) and the same logits."""
    assert type(loaded) is type(reference)
    assert not loaded.training
    expected = reference.state_dict(keep_vars=True) | dict(reference.named_buffers())
    found = loaded.state_dict(keep_vars=True) | dict(loaded.named_buffers())
    assert found.keys() == expected.keys()
    for key, tensor in expected.items():
        assert found[key].dtype == tensor.dtype, key
        assert torch.equal(found[key], tensor), key
    tied = loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert tied == (reference.lm_head.weight is reference.model.embed_tokens.weight)
    ids = token_ids(reference.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)


def to_gemma_pytorch(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s weights under gemma_pytorch's names: the embedding as ``embedder.weight``, q,
    k and v stacked into ``qkv_proj``, the QK norms as ``query_norm``/``key_norm``, and a
    precomputed rotary table (complex, like gemma_pytorch's ``freqs_cis``)."""
    state = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key == "lm_head.weight" or ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue  # the head is the embedding; k and v go into qkv_proj with q
        if key == "model.embed_tokens.weight":
            converted["embedder.weight"] = tensor.clone()
        elif ".self_attn.q_proj." in key:
            parts = [state[key.replace("q_proj", name)] for name in ("q_proj", "k_proj", "v_proj")]
            converted[key.replace("q_proj", "qkv_proj")] = torch.cat(parts)
        else:
            renamed = key.replace(".q_norm.", ".query_norm.").replace(".k_norm.", ".key_norm.")
            converted[renamed] = tensor.clone()
    angles = torch.outer(torch.arange(8.0), torch.arange(4.0))
    converted["freqs_cis"] = torch.polar(torch.ones_like(angles), angles)
    return converted


def write_ckpt(model: Any, folder: Path, name: str = "model.ckpt", **save: Any) -> Path:
    """A gemma_pytorch checkpoint folder: config.json (the file carries no config) and
    ``name``, a torch zip-format pickle ``{"model_state_dict": ...}``. Returns the .ckpt."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    path = folder / name
    torch.save({"model_state_dict": to_gemma_pytorch(model)}, path, **save)
    return path


def edit_ckpt(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Rewrite a .ckpt after ``change`` edits its state dict in place (test setup)."""
    state = torch.load(path, weights_only=True)["model_state_dict"]
    change(state)
    torch.save({"model_state_dict": state}, path)


HUB_ID = "tessera-tests/tiny-gemma"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, saved: Path, repo_id: str = HUB_ID) -> Path:
    """A Hugging Face cache holding ``saved``'s files as ``repo_id``'s main revision, laid out as
    huggingface_hub lays it out (blobs linked from a snapshot folder). Returns the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for file in sorted(saved.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot
