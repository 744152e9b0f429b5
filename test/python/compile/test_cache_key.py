"""The compile cache's key holds every input the artifact depends on, and nothing else: the
CPU threads the launchers split work over, the options, the target, the compiler's sources
(the runtime's included, which writes the manifest); not the weights."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import tessera
import tessera.runtime
from tessera import api
from tessera.compile_cache import CompileCache
from tessera.lowering.cpu import host as host_module
from tessera.models.tiny import tiny_gemma

NAME = "gemma1-mqa"


class _KeyOnly(Exception):
    """Stops a compile once its key is known (nothing is built)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def key_of(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Any:
    """``key_of(model, **options)``: the key ``tessera.compile`` would use, without building."""

    def stop(self: CompileCache, key: str, *args: object, **kwargs: object) -> None:
        raise _KeyOnly(key)

    def key_of(model: torch.nn.Module, **options: Any) -> str:
        with monkeypatch.context() as patch:
            patch.setattr(CompileCache, "obtain", stop)
            with pytest.raises(_KeyOnly) as stopped:
                tessera.compile(model, **options)
        return stopped.value.key

    return key_of


def with_threads(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Makes this machine look like one with ``threads`` cores to the CPU target."""
    real = host_module.host()
    monkeypatch.setattr(
        host_module, "host", lambda: host_module.Host(real.cpu, real.features, threads)
    )


def test_the_cpu_thread_count_is_in_the_key(
    key_of: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_gemma(NAME)
    with_threads(monkeypatch, 1)
    one = key_of(model)
    assert key_of(model) == one
    with_threads(monkeypatch, 3)
    three = key_of(model)
    assert three != one
    # And the count is in the code: the launchers split the work three ways.
    compiled = tessera.compile(model)
    assert compiled.key == three
    assert "tessera_parallel3_" in compiled.ir("llvm")


def test_options_and_target_are_in_the_key_and_weights_are_not(key_of: Any) -> None:
    model = tiny_gemma(NAME)
    base = key_of(model, max_seq_len=32)
    assert key_of(model, max_seq_len=64) != base
    assert key_of(model, max_seq_len=32, max_batch=4) != base
    assert key_of(model, target="cpu:sse", max_seq_len=32) != base
    # Weights are arguments of the compiled code: same structure, same artifact.
    assert key_of(tiny_gemma(NAME, seed=5), max_seq_len=32) == base
    # The dtype is part of the IR.
    assert key_of(tiny_gemma(NAME, dtype=torch.bfloat16), max_seq_len=32) != base


def test_the_runtime_sources_are_in_the_compiler_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime writes every artifact's manifest: a change to it must not reuse old ones."""
    runtime_init = tessera.runtime.__file__
    assert runtime_init is not None
    copy = tmp_path / "runtime"
    shutil.copytree(Path(runtime_init).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tessera.runtime, "__file__", str(copy / "__init__.py"))
    fingerprint = api._compiler_fingerprint.__wrapped__  # uncached
    before = fingerprint()
    assert fingerprint() == before
    manifest = copy / "manifest.py"
    manifest.write_text(manifest.read_text() + "\n# a change to the manifest writer\n")
    assert fingerprint() != before
