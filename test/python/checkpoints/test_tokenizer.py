"""``tessera.tokenizer.load_tokenizer``: a checkpoint folder's tokenizer through transformers'
AutoTokenizer, from ``tokenizer.json`` or a SentencePiece ``tokenizer.model``; tiny tokenizers are
built here, nothing is downloaded and the folder is left unchanged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import huggingface_hub
import pytest
import sentencepiece
from test_checkpoints_support import HUB_ID, fake_hub_cache, snapshot
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import tessera.tokenizer
from tessera import CheckpointError
from tessera.tokenizer import load_tokenizer

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "hello", "world", "tiny", "gemma", "reads", "text"]
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world from a tiny tokenizer",
    "gemma models read text as tokens",
] * 20


def word_level(folder: Path) -> Path:
    """A word-level tokenizer saved as tokenizer.json (+ its tokenizer_config.json)."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    wrapped.save_pretrained(folder)
    return folder


def sentencepiece_model(folder: Path) -> Path:
    """A SentencePiece BPE model with Gemma's special pieces, trained on ``CORPUS`` (single
    thread: the same model every time), saved as the folder's only tokenizer file next to a
    Gemma config.json (from which AutoTokenizer picks the tokenizer class)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=64,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma"}))
    return folder


def test_tokenizer_json(tmp_path: Path) -> None:
    folder = word_level(tmp_path)
    before = snapshot(folder)
    tokenizer = load_tokenizer(folder)
    assert snapshot(folder) == before
    ids = tokenizer.encode("hello tiny world", add_special_tokens=False)
    assert ids == [4, 6, 5]
    assert tokenizer.decode(ids) == "hello tiny world"
    assert tokenizer.encode("hello dragon", add_special_tokens=False) == [4, 3]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 1, 0)


def test_sentencepiece_model(tmp_path: Path) -> None:
    folder = sentencepiece_model(tmp_path)
    before = snapshot(folder)
    tokenizer = load_tokenizer(folder)
    assert snapshot(folder) == before
    reference = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    for text in ["hello world", "the lazy fox reads tokens", "unknown ZZZ"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text), text
    ids = tokenizer.encode("gemma models read text", add_special_tokens=False)
    assert tokenizer.decode(ids) == "gemma models read text"
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (2, 1)


def test_hub_id_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub_cache(tmp_path / "hub", word_level(tmp_path / "saved"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert load_tokenizer(HUB_ID).encode("gemma reads text", add_special_tokens=False) == [7, 8, 9]


def test_folder_without_a_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma"}))
    with pytest.raises(CheckpointError, match=f"{tmp_path}: has no tokenizer"):
        load_tokenizer(tmp_path)


def test_sentencepiece_without_its_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = sentencepiece_model(tmp_path)
    monkeypatch.setattr(tessera.tokenizer, "_importable", lambda module: module != "sentencepiece")
    with pytest.raises(CheckpointError, match=r"only tokenizer\.model.*sentencepiece package"):
        load_tokenizer(folder)


def test_unreadable_tokenizer_json(tmp_path: Path) -> None:
    folder = word_level(tmp_path)
    (folder / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(CheckpointError, match=f"{tmp_path}: transformers' AutoTokenizer cannot"):
        load_tokenizer(folder)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "absent")
