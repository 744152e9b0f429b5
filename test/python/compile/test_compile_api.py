"""tessera.compile and CompiledModel: stages, cache, dumps, checkpoints, and bad input."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import seeds
import torch

import tessera
from tessera.models.tiny import tiny_gemma

NAME = "gemma1-mqa"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(folder))
    return folder


def ids_for(model: torch.nn.Module, length: int = 9) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (2, length), generator=seeds.generator())


def close_to(model: torch.nn.Module, compiled: tessera.CompiledModel) -> bool:
    ids = ids_for(model)
    with torch.no_grad():
        reference = model(ids, use_cache=False).logits
    return bool(((compiled(ids).logits - reference).norm() / reference.norm()) < 1e-4)


def test_every_stage_is_available_and_holds_its_ops(cache: Path) -> None:
    compiled = tessera.compile(tiny_gemma(NAME))
    assert compiled.stages == ("high", "mid", "abi", "linalg", "llvm")
    assert '"tessera.region"' in compiled.ir("high") and "linalg.matmul" in compiled.ir("high")
    assert '"tessera.attention.flash"' in compiled.ir("mid")
    assert "bufferization.materialize_in_destination" in compiled.ir("abi")
    assert '"tessera.' not in compiled.ir("linalg")
    assert "llvm.func @forward" in compiled.ir("llvm")
    with pytest.raises(tessera.TesseraError, match=r"no stage 'ptx'.*high, mid, abi, linalg, llvm"):
        compiled.ir("ptx")


def test_second_compile_is_a_cache_hit_with_the_same_results(cache: Path) -> None:
    model = tiny_gemma(NAME)
    first = tessera.compile(model)
    second = tessera.compile(model)
    assert not first.cache_hit and second.cache_hit
    assert first.directory == second.directory
    ids = ids_for(model)
    assert torch.equal(first(ids).logits, second(ids).logits)
    # Different weights, same structure: the artifact is shared, the results are the new ones.
    other = tiny_gemma(NAME, seed=7)
    third = tessera.compile(other)
    assert third.cache_hit and close_to(other, third)


def test_always_compile_knob_skips_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_gemma(NAME)
    tessera.compile(model)
    monkeypatch.setenv("TESSERA_ALWAYS_COMPILE", "1")
    assert not tessera.compile(model).cache_hit


def test_corrupt_binary_is_detected_and_rebuilt(cache: Path) -> None:
    model = tiny_gemma(NAME)
    first = tessera.compile(model)
    library = first.directory / "model.so"
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))
    rebuilt = tessera.compile(model)
    assert not rebuilt.cache_hit
    assert close_to(model, rebuilt)


def test_missing_stage_file_is_rebuilt(cache: Path) -> None:
    model = tiny_gemma(NAME)
    first = tessera.compile(model)
    (first.directory / "ir" / "mid.mlir").unlink()
    rebuilt = tessera.compile(model)
    assert not rebuilt.cache_hit and '"tessera.attention.flash"' in rebuilt.ir("mid")


def test_no_temporary_folders_are_left_in_the_cache(cache: Path) -> None:
    tessera.compile(tiny_gemma(NAME))
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_dump_dir_receives_every_stage(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_DUMP_DIR", str(tmp_path / "dump"))
    compiled = tessera.compile(tiny_gemma(NAME))
    folder = tmp_path / "dump" / compiled.key
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{stage}.mlir" for stage in compiled.stages
    )
    assert (folder / "mid.mlir").read_text() == compiled.ir("mid")


def test_compiling_a_checkpoint_folder(cache: Path, tmp_path: Path) -> None:
    model = tiny_gemma("gemma3-mqa-odd")
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    compiled = tessera.compile(folder)
    assert close_to(model, compiled)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert before == after


def test_a_broken_checkpoint_names_the_problem_and_stays_untouched(
    cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoint"
    tiny_gemma(NAME).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    before = sorted(os.listdir(folder))
    with pytest.raises(tessera.CheckpointError, match=r"model\.safetensors"):
        tessera.compile(folder)
    assert sorted(os.listdir(folder)) == before


def test_training_flags_are_restored(cache: Path) -> None:
    model = tiny_gemma(NAME).train()
    tessera.compile(model)
    assert all(module.training for module in model.modules())


def test_option_errors(cache: Path) -> None:
    model = tiny_gemma(NAME)
    with pytest.raises(tessera.TesseraError, match="unknown target 'tpu'"):
        tessera.compile(model, target="tpu")
    with pytest.raises(tessera.TesseraError, match="dtype applies to checkpoint paths"):
        tessera.compile(model, dtype=torch.bfloat16)
    with pytest.raises(tessera.TesseraError, match=r"expected a torch\.nn\.Module"):
        tessera.compile(42)  # type: ignore[arg-type]


def test_bad_inputs_are_refused_with_a_clear_error(cache: Path) -> None:
    model = tiny_gemma(NAME)
    compiled = tessera.compile(model, max_seq_len=32)
    vocab = model.config.vocab_size
    with pytest.raises(tessera.RuntimeInputError, match=str(vocab)):
        compiled(torch.full((1, 4), vocab, dtype=torch.int64))
    with pytest.raises(tessera.RuntimeInputError, match="-1"):
        compiled(torch.tensor([[1, -1]]))
    with pytest.raises(tessera.RuntimeInputError, match="dtype"):
        compiled(torch.zeros((1, 4), dtype=torch.float32))
    with pytest.raises(tessera.RuntimeInputError, match=r"rank|dims"):
        compiled(torch.zeros((4,), dtype=torch.int64))
    with pytest.raises(tessera.RuntimeInputError, match="32"):
        compiled(torch.zeros((1, 33), dtype=torch.int64))


class UsesCumsum(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.embed(input_ids), dim=1)


def test_untranslatable_op_is_named_with_its_module(cache: Path) -> None:
    with pytest.raises(tessera.UnsupportedOpError, match=r"aten\.cumsum"):
        tessera.compile(UsesCumsum())
