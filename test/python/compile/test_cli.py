"""The ``tessera`` command: ``compile`` and ``cache list|clear``, help for each, and bad input
reported in one line on stderr with a non-zero status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import seeds
import torch
from cli_support import one_error_line, run

from tessera import runtime
from tessera.cli_cache import duration, human_age, human_size
from tessera.models.tiny import tiny_gemma

NAME = "gemma1-mqa"
DAY = 86400.0


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(folder))
    return folder


def fake_entry(cache: Path, key: str, *, used_days_ago: float, size: int = 200) -> Path:
    """A published entry of ``size`` bytes as the cache lays it out (listing and clearing read
    nothing else)."""
    entry = cache / key
    (entry / "ir").mkdir(parents=True)
    built = time.time() - used_days_ago * DAY - 60
    info = {"key": key, "built": built, "model": "GemmaForCausalLM float32", "target": "cpu"}
    text = json.dumps(info)
    (entry / "cache.json").write_text(text)
    assert size >= len(text), "the entry's size includes its cache.json"
    (entry / "model.so").write_bytes(b"\0" * (size - len(text)))
    used = time.time() - used_days_ago * DAY
    os.utime(entry, (used, used))
    return entry


@pytest.mark.parametrize(
    "argv",
    [[], ["compile"], ["cache"], ["cache", "list"], ["cache", "clear"]],
    ids=lambda argv: " ".join(argv) or "tessera",
)
def test_help_works_for_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run([*argv, "--help"], capsys)
    assert status == 0 and err == ""
    assert out.startswith(f"usage: tessera {' '.join(argv)}".rstrip())


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run([], capsys)
    assert status == 2
    assert one_error_line(err).startswith("tessera: error: the following arguments are required")


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["compile", "tiny:nope", "-o", "{out}"], 1, r"tessera: error: unknown tiny model 'nope'"),
        (
            ["compile", "{tmp}/nowhere", "-o", "{out}"],
            1,
            r"tessera: error: MODEL '.*nowhere' is neither a checkpoint folder",
        ),
        (["compile", "{tmp}", "-t", "cpu", "-o", "{out}"], 1, r"tessera: error: .*config\.json"),
        # A Hub id goes to tessera.compile, which looks in the local cache only.
        (
            ["compile", "someone/absent-model", "-t", "cpu", "-o", "{out}"],
            1,
            r"absent-model.*cache",
        ),
        (["compile", f"tiny:{NAME}", "-o", "{tmp}"], 1, r"-o .*: exists and is not an empty"),
        (
            ["compile", f"tiny:{NAME}", "-t", "tpu", "-o", "{out}"],
            1,
            r"tessera: error: unknown target 'tpu'",
        ),
        (
            ["compile", f"tiny:{NAME}", "-o", "{out}", "--max-seq-len", "0"],
            2,
            r"tessera compile: error: argument --max-seq-len: 0 is not positive",
        ),
        (["compile", f"tiny:{NAME}"], 2, r"the following arguments are required: --output"),
        (
            ["cache", "clear", "--older-than", "3x"],
            2,
            r"tessera cache clear: error: argument --older-than: '3x' is not an age",
        ),
        (["cache", "clear", "--key", "xyz"], 1, r"tessera: error: 'xyz' is not a cache key"),
        (["cache", "clear", "--key", "abc"], 1, r"tessera: error: no cache entry 'abc'"),
        (["cache", "prune"], 2, r"invalid choice: 'prune'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    argv: list[str],
    status: int,
    message: str,
    cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache.mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    argv = [a.format(tmp=tmp_path, out=tmp_path / "out") for a in argv]
    got, out, err = run(argv, capsys)
    assert got == status and out == ""
    assert re.search(message, one_error_line(err)), err
    assert not (tmp_path / "out").exists()


def test_a_bad_log_level_is_one_line(cache: Path) -> None:
    # In a fresh process: the logger reads TESSERA_LOG once, when it is first imported.
    done = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "cache", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "TESSERA_LOG": "loud"},
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert one_error_line(done.stderr) == (
        "tessera: error: TESSERA_LOG='loud' is not a log level (use debug, info, warning or off)"
    )


def test_compile_list_and_clear_through_the_installed_command(cache: Path, tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "tessera"
    assert command.is_file(), "the console script is missing: pip install -e . registers it"
    environment = {**os.environ, "TESSERA_LOG": "off"}

    def tessera(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(command), *argv], capture_output=True, text=True, env=environment, check=False
        )

    out = tmp_path / "artifact"
    done = tessera("compile", f"tiny:{NAME}", "--target", "cpu", "-o", str(out))
    assert done.returncode == 0, done.stderr
    # stderr is no terminal here: no progress bar, no log (TESSERA_LOG is off).
    assert done.stderr == ""
    assert done.stdout.startswith(f"{out}: tiny:{NAME} for cpu (compiled in ")
    assert (out / "manifest.json").is_file() and (out / "ir" / "llvm.mlir").is_file()

    # The artifact runs anywhere with its weights: the tiny model's are seeded.
    model = tiny_gemma(NAME)
    artifact = runtime.load(out)
    artifact.bind(model.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=seeds.generator())
    (logits,) = artifact["prefill"](ids)
    with torch.no_grad():
        reference = model(ids, use_cache=False).logits
    assert ((logits - reference).norm() / reference.norm()) < 1e-4

    again = tessera("compile", f"tiny:{NAME}", "--target", "cpu", "-o", str(tmp_path / "again"))
    assert again.returncode == 0 and "(cache hit in " in again.stdout
    key = again.stdout.strip().rpartition("cache key ")[2].rstrip(")")

    listed = tessera("cache", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{cache}: 1 entry, ")
    assert lines[1].split() == ["KEY", "SIZE", "BUILT", "USED", "TARGET", "MODEL"]
    row = lines[2].split()
    assert row[0] == key and row[-3:] == ["cpu", "GemmaForCausalLM", "float32"]

    cleared = tessera("cache", "clear", "--key", key[:8])
    assert cleared.returncode == 0 and "deleted 1 entry" in cleared.stdout
    assert not (cache / key).exists()
    assert tessera("cache", "list").stdout.startswith(f"{cache}: 0 entries, 0 B")

    failed = tessera("compile", "tiny:nope", "-o", str(tmp_path / "nope"))
    assert failed.returncode == 1 and failed.stdout == ""
    assert one_error_line(failed.stderr).startswith("tessera: error: unknown tiny model 'nope'")


def test_cache_list_shows_every_entry_most_recent_first(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = fake_entry(cache, "a" * 32, used_days_ago=10, size=3 * 1024 * 1024)
    new = fake_entry(cache, "b" * 32, used_days_ago=0.5, size=200)
    (cache / f".tmp-{'c' * 32}-0").mkdir()  # a build under way: not an entry
    status, out, err = run(["cache", "list"], capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{cache}: 2 entries, 3.0 MiB; 1 build(s) in progress or abandoned"
    assert [line.split()[0] for line in lines[1:]] == ["KEY", new.name, old.name]
    row = "200 B  12h ago  12h ago  cpu  GemmaForCausalLM float32"
    assert lines[2].split()[1:] == row.split()
    assert lines[3].split()[1:4] == ["3.0", "MiB", "10d"]


def test_cache_clear_older_than_one_key_or_all(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ["a" * 32, "ab" + "0" * 30, "b" * 32, "c" * 32]
    for key, days in zip(keys, (30, 1, 8, 0), strict=True):
        fake_entry(cache, key, used_days_ago=days, size=150)
        (cache / f"{key}.lock").touch()
    status, out, _ = run(["cache", "clear", "--older-than", "1w"], capsys)
    assert status == 0 and out == f"{cache}: deleted 2 entries, 300 B freed\n"
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [keys[1], keys[3]]
    # The deleted entries' lock files went with them.
    assert sorted(p.name for p in cache.glob("*.lock")) == [f"{keys[1]}.lock", f"{keys[3]}.lock"]

    fake_entry(cache, "a" * 32, used_days_ago=0)
    status, _, err = run(["cache", "clear", "--key", "a"], capsys)
    assert status == 1
    assert one_error_line(err) == (
        f"tessera: error: 'a' starts 2 cache keys ({'a' * 32}, {keys[1]}); give more of the key"
    )
    status, out, _ = run(["cache", "clear", "--key", "ab"], capsys)
    assert status == 0 and "deleted 1 entry" in out and not (cache / keys[1]).exists()

    (cache / f".trash-{keys[3]}-1").mkdir()
    status, out, _ = run(["cache", "clear"], capsys)
    assert status == 0 and "deleted 2 entries" in out
    assert list(cache.iterdir()) == []


def test_cache_clear_of_a_cache_that_does_not_exist(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["cache", "clear"], capsys)
    assert status == 0 and out == f"{cache}: no cache here, nothing to clear\n"
    assert not cache.exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)],
)
def test_ages_parse(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_sizes_and_ages_read_well() -> None:
    assert human_size(0) == "0 B" and human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB" and human_size(5 * 1024**3) == "5.0 GiB"
    assert human_size(3 * 1024**4) == "3072.0 GiB"
    assert human_age(5) == "5s ago" and human_age(90) == "2m ago"
    assert human_age(3 * 3600) == "3h ago" and human_age(3 * DAY) == "3d ago"
