"""gemma_pytorch checkpoints: a ``.ckpt`` (torch zip pickle ``{"model_state_dict": ...}`` with
fused ``qkv_proj``) next to the model's config.json loads as the same model, bit for bit; anything
else is refused naming the file (and tensor)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from test_checkpoints_support import (
    TINY,
    assert_same_model,
    edit_ckpt,
    load_fails,
    load_unchanged,
    write_ckpt,
)

from tessera.checkpoints import load_hf_checkpoint, open_checkpoint
from tessera.models.tiny import tiny_gemma

QKV = "model.layers.1.self_attn.qkv_proj.weight"


@pytest.mark.parametrize("name", TINY)
def test_loads_every_tiny_gemma(name: str, tmp_path: Path) -> None:
    reference = tiny_gemma(name)
    write_ckpt(reference, tmp_path)
    assert open_checkpoint(tmp_path).files.format == "gemma_pytorch"
    assert_same_model(load_unchanged(tmp_path), reference)


def test_bf16_ckpt_converts_to_the_config_dtype(tmp_path: Path) -> None:
    reference = tiny_gemma("gemma2-gqa", dtype=torch.bfloat16)
    write_ckpt(reference, tmp_path)
    model = load_unchanged(tmp_path, dtype=torch.float32)
    assert model.dtype == torch.float32
    for key, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor.float()), key


def test_path_of_the_ckpt_file_itself(tmp_path: Path) -> None:
    reference = tiny_gemma("gemma1-mqa")
    path = write_ckpt(reference, tmp_path, name="gemma-2b.ckpt")
    assert_same_model(load_hf_checkpoint(path), reference)


def test_multimodal_ckpt_gives_its_text_model(tmp_path: Path) -> None:
    # gemma_pytorch's multimodal Gemma 3 names its embedding text_token_embedder and keeps a
    # SigLIP tower and a projection next to the text model; those are ignored.
    reference = tiny_gemma("gemma3-gqa")
    path = write_ckpt(reference, tmp_path)

    def multimodal(state: dict[str, torch.Tensor]) -> None:
        state["text_token_embedder.weight"] = state.pop("embedder.weight")
        state["siglip_vision_model.encoder.weight"] = torch.zeros(4, 4)
        state["mm_input_projection.weight"] = torch.zeros(4, 4)
        state["mm_soft_embedding_norm.weight"] = torch.zeros(4)

    edit_ckpt(path, multimodal)
    assert_same_model(load_unchanged(tmp_path), reference)


def test_loaded_weights_own_their_memory(tmp_path: Path) -> None:
    # The .ckpt is memory-mapped; the model must not keep views of the mapping (q, k and v
    # of one fused tensor especially).
    write_ckpt(tiny_gemma("gemma2-gqa"), tmp_path)
    model = load_unchanged(tmp_path)
    q = model.model.layers[1].self_attn.q_proj.weight
    assert q.untyped_storage().nbytes() == q.numel() * q.element_size()
    assert q.is_contiguous()


# --- refused -----------------------------------------------------------------------------------


class _TouchOnLoad:
    """An object whose unpickling touches a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.path),))


def test_pickle_with_code_is_refused_unrun(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    marker = tmp_path / "unpickled"
    torch.save({"model_state_dict": {"x": _TouchOnLoad(str(marker))}}, path)
    load_fails(tmp_path, "model.ckpt", "weights-only unpickler")
    assert not marker.exists()


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    torch.save({"weights": {}}, path)
    load_fails(tmp_path, "model.ckpt", "not a gemma_pytorch checkpoint", "'model_state_dict'")


def test_legacy_format_cannot_be_mapped(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    state = torch.load(path, weights_only=True)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    load_fails(tmp_path, "model.ckpt", "torch.load cannot read it")


def test_plain_pickle_is_not_read(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    path.write_bytes(pickle.dumps({"model_state_dict": {}}))
    load_fails(tmp_path, "model.ckpt", "torch.load cannot read it")


def test_fused_qkv_of_the_wrong_size(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma2-gqa"), tmp_path)
    edit_ckpt(path, lambda state: state.update({QKV: state[QKV][:-24].clone()}))
    # gemma2-gqa: 4 query heads and 2 kv heads of 24 → (4 + 2 + 2) × 24 = 192 rows.
    load_fails(
        tmp_path,
        "model.ckpt",
        f"key '{QKV}'",
        "found shape [168, 64]",
        "expects [192, 64]",
        "q_proj [96, 64] + k_proj [48, 64] + v_proj [48, 64]",
    )


def test_missing_qkv_is_named_as_stored(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma2-gqa"), tmp_path)
    edit_ckpt(path, lambda state: state.pop(QKV))
    load_fails(
        tmp_path,
        "model.ckpt",
        f"key '{QKV}'",
        "missing",
        "model key 'model.layers.1.self_attn.q_proj.weight'",
    )


def test_unexpected_tensor(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    edit_ckpt(path, lambda state: state.update({"model.extra.weight": torch.zeros(2)}))
    load_fails(tmp_path, "model.ckpt", "key 'model.extra.weight'", "does not have")


def test_quantized_ckpt(tmp_path: Path) -> None:
    path = write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    scaler = "model.layers.0.mlp.up_proj.weight_scaler"
    edit_ckpt(path, lambda state: state.update({scaler: torch.ones(80)}))
    load_fails(tmp_path, "model.ckpt", f"key '{scaler}'", "quantized")


def test_two_ckpts_in_one_folder(tmp_path: Path) -> None:
    write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path, name="other.ckpt")
    load_fails(tmp_path, "2 gemma_pytorch checkpoints", "model.ckpt", "other.ckpt")


def test_ckpt_without_config(tmp_path: Path) -> None:
    write_ckpt(tiny_gemma("gemma1-mqa"), tmp_path)
    (tmp_path / "config.json").unlink()
    load_fails(tmp_path, "config.json", "missing")
