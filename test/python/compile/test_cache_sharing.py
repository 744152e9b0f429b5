"""The compile cache shared between processes: a model compiled by two processes at once is
built once; a build killed midway leaves a folder the next use sweeps, and nothing that is in
use is ever swept; ``cache=False`` and TESSERA_ALWAYS_COMPILE leave the shared entry alone."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import seeds
import torch
from filelock import FileLock

import tessera
from tessera.compile_cache import STALE_SECONDS, CompileCache
from tessera.models.tiny import tiny_gemma

NAME = "gemma1-mqa"
# Seconds a child process may take to import, trace and build a tiny model on a busy machine.
CHILD_SECONDS = 600

# Compiles the tiny model and prints what it got. Both children wait for each other just before
# taking the key's lock, after both have found no entry: without the lock, both would build.
COMPILE_AT_ONCE = """
import json, sys, time
from pathlib import Path

import tessera
from tessera.compile_cache import CompileCache
from tessera.models.tiny import tiny_gemma

meeting, me = Path(sys.argv[1]), sys.argv[2]
build_shared = CompileCache._build_shared

def meet_then_build(self, *args, **kwargs):
    (meeting / me).touch()
    deadline = time.monotonic() + 300
    while len(list(meeting.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("the other process never reached the lock")
        time.sleep(0.01)
    return build_shared(self, *args, **kwargs)

CompileCache._build_shared = meet_then_build
compiled = tessera.compile(tiny_gemma(sys.argv[3]))
print(json.dumps({"hit": compiled.cache_hit, "directory": str(compiled.directory)}))
"""

# Compiles the tiny model and is killed (by the test) while writing the artifact.
KILLED_WHILE_BUILDING = """
import sys, time
from pathlib import Path

import tessera
from tessera.lowering.cpu.target import CpuTarget
from tessera.models.tiny import tiny_gemma

def finish(self, build):
    Path(sys.argv[1]).touch()
    time.sleep(600)

CpuTarget.finish = finish
tessera.compile(tiny_gemma(sys.argv[2]))
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(folder))
    return folder


def child(script: str, *args: str, log: str = "info") -> subprocess.Popen[str]:
    """A fresh interpreter running ``script`` (the cache folder comes from this environment)."""
    environment = {**os.environ, "TESSERA_LOG": log}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def published(cache: Path) -> list[str]:
    return sorted(entry.key for entry in CompileCache(cache).entries())


def temporaries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_two_processes_compiling_one_model_build_it_once(cache: Path, tmp_path: Path) -> None:
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    processes = [child(COMPILE_AT_ONCE, str(meeting), str(i), NAME) for i in range(2)]
    results, logs = [], []
    for process in processes:
        out, err = process.communicate(timeout=CHILD_SECONDS)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
        logs.append(err)
    # One built; the other waited on the lock, then found the entry the first published.
    assert sorted(result["hit"] for result in results) == [False, True]
    assert results[0]["directory"] == results[1]["directory"]
    builder, waiter = (logs[0], logs[1]) if not results[0]["hit"] else (logs[1], logs[0])
    assert builder.count("cache miss") == 1 and "stage llvm" in builder
    assert "waiting for another process building" in waiter
    assert "built meanwhile by another process" in waiter
    assert "cache miss" not in waiter and "stage llvm" not in waiter
    assert len(published(cache)) == 1 and temporaries(cache) == []


def test_a_killed_build_leaves_a_folder_the_next_compile_sweeps(
    cache: Path, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    process = child(KILLED_WHILE_BUILDING, str(ready), NAME)
    try:
        deadline = time.monotonic() + CHILD_SECONDS
        while not ready.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the build never reached the artifact stage"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    (left,) = [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    assert (left / "ir" / "mid.mlir").is_file()
    assert published(cache) == []
    # Young, it stays (on a file system whose locks cannot be trusted, age is the only sign).
    assert CompileCache(cache).sweep() == [] and left.exists()
    old = time.time() - STALE_SECONDS - 60
    os.utime(left, (old, old))
    # The killed process's lock went with it: the next compile sweeps its folder and builds.
    compiled = tessera.compile(tiny_gemma(NAME))
    assert not compiled.cache_hit
    assert not left.exists()
    assert temporaries(cache) == [] and published(cache) == [compiled.key]


def test_temporary_folders_in_use_are_never_swept(cache: Path) -> None:
    store = CompileCache(cache)
    cache.mkdir()
    key = "0123456789abcdef0123456789abcdef"
    staging = cache / f".tmp-{key}-feed"
    private = cache / ".private-beef"
    trash = cache / f".trash-{key}-cafe"
    for folder in (staging, private, trash):
        (folder / "ir").mkdir(parents=True)
    old = time.time() - STALE_SECONDS - 60
    for folder in (staging, private):
        os.utime(folder, (old, old))
    building = FileLock(store.lock_path(key), thread_local=False)
    owning = FileLock(cache / ".private-beef.lock", thread_local=False)
    building.acquire()
    owning.acquire()
    try:
        # Trash is nobody's; the held folders stay however old they are.
        assert store.sweep(max_age=0) == [trash]
        assert staging.exists() and private.exists()
    finally:
        building.release()
        owning.release()
    assert sorted(store.sweep()) == sorted([staging, private])
    assert temporaries(cache) == []


def test_cache_false_leaves_the_shared_entry_alone(cache: Path) -> None:
    model = tiny_gemma(NAME)
    shared = tessera.compile(model)
    library = shared.directory / "model.so"
    before = (shared.directory.stat().st_ino, library.stat().st_ino, library.read_bytes())

    private = tessera.compile(model, cache=False)
    assert not private.cache_hit and private.key == shared.key
    assert private.directory != shared.directory
    assert private.directory.parent == cache
    after = (shared.directory.stat().st_ino, library.stat().st_ino, library.read_bytes())
    assert after == before
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=seeds.generator())
    assert torch.equal(private(ids).logits, shared(ids).logits)

    # The private build lives as long as the model that runs it.
    folder = private.directory
    del private
    gc.collect()
    assert not folder.exists()
    assert temporaries(cache) == [] and published(cache) == [shared.key]


def test_always_compile_stores_only_where_no_entry_is(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_gemma(NAME)
    monkeypatch.setenv("TESSERA_ALWAYS_COMPILE", "1")
    first = tessera.compile(model)
    assert not first.cache_hit and first.directory == cache / first.key
    inode = first.directory.stat().st_ino
    again = tessera.compile(model)
    assert not again.cache_hit and again.directory != first.directory
    assert first.directory.stat().st_ino == inode
    monkeypatch.delenv("TESSERA_ALWAYS_COMPILE")
    assert tessera.compile(model).cache_hit
