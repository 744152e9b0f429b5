"""``tessera bench``: the table lists every measurement, ``--json`` writes the benchmark format
(device, date, commit, rows), and bad input is one line on stderr with a non-zero status.
Timings are only checked to be positive and finite: their values depend on the machine."""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_error_line, run

import tessera
from tessera import cli_bench
from tessera.models.tiny import tiny_gemma

# The model of test_cli.py and test_cli_generate.py: one compile serves them all (the
# session's cache).
NAME = "gemma1-mqa"
TINY = f"tiny:{NAME}"
SMALL = ["--batch", "2", "--prompt-length", "8", "--new-tokens", "4", "--repeat", "2"]
NUMBER = r"(\d+(?:\.\d+)?)"


def positive(text: str) -> float:
    value = float(text)
    assert math.isfinite(value) and value > 0, text
    return value


@pytest.fixture(scope="module")
def compiled() -> tessera.CompiledModel:
    """What the command compiles for the tiny model."""
    return tessera.compile(tiny_gemma(NAME), "cpu")


def figure(out: str, label: str, unit: str) -> float:
    """The positive number that the table's ``label`` line gives in ``unit``."""
    match = re.search(rf"^  {label}\s+{NUMBER} {unit}\b", out, re.M)
    assert match is not None, f"no {label} line in {unit}:\n{out}"
    return positive(match.group(1))


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["bench", "--help"], capsys)
    assert status == 0 and err == ""
    assert out.startswith("usage: tessera bench")
    for flag in ("--target", "--dtype", "--batch", "--prompt-length", "--new-tokens", "--repeat"):
        assert flag in out
    status, out, _ = run(["--help"], capsys)
    assert status == 0 and re.search(r"^\s+bench\s", out, re.M)


def test_the_table_lists_every_measurement(
    compiled: tessera.CompiledModel, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["bench", TINY, *SMALL], capsys)
    assert status == 0 and err == "", err
    assert out.startswith(f"{TINY} on cpu (")
    assert "batch 2, prompt 8 tokens, 4 new tokens" in out
    assert "medians of 2 runs after a warm-up" in out
    figure(out, "compile", "s")
    prefill = figure(out, "prefill", "ms")
    generate = figure(out, "generate", "ms")
    figure(out, "decode", "tokens/s")
    mib = figure(out, "KV cache", "MiB")
    assert mib == pytest.approx(compiled.cache_memory(2, 12) / 2**20, abs=1e-3)
    # The decode rate says how it is derived, from the figures printed above it.
    assert f"= 2 x 4 tokens / ({generate:.3f} - {prefill:.3f}) ms" in out
    assert cli_bench.DERIVATION in out


def test_json_has_the_benchmark_format(
    compiled: tessera.CompiledModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.json"
    argv = ["bench", TINY, "--batch", "1", "--prompt-length", "4", "--new-tokens", "2"]
    status, out, err = run([*argv, "--repeat", "2", "--json", str(path)], capsys)
    assert status == 0 and err == "", err
    assert "tokens/s" in out
    record: dict[str, Any] = json.loads(path.read_text())
    assert set(record) == {"device", "date", "commit", "torch_threads", "rows", "detail"}
    assert isinstance(record["device"], str) and record["device"]
    assert datetime.date.fromisoformat(record["date"]) == datetime.date.today()
    assert isinstance(record["commit"], str) and record["commit"]
    rows = record["rows"]
    assert [row["bench"] for row in rows] == ["compile", "prefill", "generate", "decode"]
    for row in rows:
        assert {"bench", "case", "tessera_ms", "peers"} <= set(row)
        assert row["case"] == f"{TINY} cpu f32 B1 P4 N2"
        assert isinstance(row["tessera_ms"], float)
        positive(str(row["tessera_ms"]))
        assert row["peers"] == []
    assert isinstance(rows[0]["cache_hit"], bool)
    positive(str(rows[3]["tokens_per_s"]))
    (detail,) = record["detail"]
    assert detail["cache_memory_bytes"] == compiled.cache_memory(1, 6)
    assert detail["decode_tokens_per_s"] == pytest.approx(
        2 / (detail["generate_seconds"] - detail["prefill_seconds"])
    )


def test_the_decode_rate_is_derived_from_generate_and_prefill() -> None:
    def figures(prefill: float, generate: float) -> cli_bench.Figures:
        return cli_bench.Figures(
            model=TINY,
            target="cpu",
            dtype="f32",
            batch=2,
            prompt_length=8,
            new_tokens=4,
            repeat=3,
            compile_seconds=1.5,
            cache_hit=True,
            prefill_seconds=prefill,
            generate_seconds=generate,
            cache_memory_bytes=3 << 20,
        )

    measured = figures(0.001, 0.005)
    assert measured.decode_tokens_per_second == pytest.approx(2 * 4 / 0.004)
    decode = measured.rows()[-1]
    assert decode["bench"] == "decode" and decode["tessera_ms"] == pytest.approx(1.0)
    table = measured.table("a CPU")
    assert "2000.0 tokens/s  = 2 x 4 tokens / (5.000 - 1.000) ms" in table
    assert "3.000 MiB" in table and "(cache hit)" in table
    # A generate no longer than the prefill gives no rate: said so, and no decode row.
    unmeasured = figures(0.005, 0.005)
    assert unmeasured.decode_tokens_per_second is None
    assert [row["bench"] for row in unmeasured.rows()] == ["compile", "prefill", "generate"]
    assert "n/a (generate took no longer than the prefill)" in unmeasured.table("a CPU")
    assert cli_bench.results(unmeasured, "a CPU")["detail"][0]["decode_tokens_per_s"] is None


def test_a_gpu_target_synchronizes_before_each_clock_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("sync"))
    sync = cli_bench.synchronizer("cuda")
    cli_bench.median_seconds(lambda: events.append("work"), 2, sync)
    # The warm-up, then each timed run between two synchronizations.
    assert events == ["work", "sync"] + ["sync", "work", "sync"] * 2
    events.clear()
    cli_bench.median_seconds(lambda: events.append("work"), 2, cli_bench.synchronizer("cpu"))
    assert events == ["work"] * 3
    # Without a GPU nothing is synchronized (the target's calls fail on their own).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cli_bench.synchronizer("cuda")()
    assert events == ["work"] * 3


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--batch", "0"], 2, r"argument --batch: 0 is not positive"),
        (["--prompt-length", "0"], 2, r"argument --prompt-length: 0 is not positive"),
        (["--new-tokens", "-1"], 2, r"argument --new-tokens/-n: -1 is not positive"),
        (["--repeat", "0"], 2, r"argument --repeat: 0 is not positive"),
        (["--repeat", "two"], 2, r"argument --repeat: 'two' is not a whole number"),
        (["--dtype", "float64"], 2, r"argument --dtype: invalid choice: 'float64'"),
        # The tiny models are compiled for 8192 tokens: generation's own error.
        (
            ["--prompt-length", "8000", "--new-tokens", "500"],
            1,
            r"tessera: error: the prompt and the new tokens make 8500 tokens; the model was "
            r"compiled for at most 8192 \(max_seq_len\)",
        ),
        (["-t", "tpu"], 1, r"tessera: error: unknown target 'tpu'"),
        (["--json", "{tmp}"], 1, r"tessera: error: --json .*: is a folder"),
        (["--json", "{tmp}/absent/out.json"], 1, r"tessera: error: --json .*: no folder"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    argv: list[str],
    status: int,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    got, out, err = run(["bench", TINY, *SMALL, *argv], capsys)
    assert got == status and out == ""
    assert re.search(message, one_error_line(err)), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tiny:nope", r"tessera: error: unknown tiny model 'nope'"),
        ("{tmp}/nowhere", r"tessera: error: MODEL '.*nowhere' is neither a checkpoint folder"),
        ("someone/absent-model", r"absent-model.*cache"),
    ],
)
def test_an_unknown_model_is_one_line(
    model: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["bench", model.format(tmp=tmp_path), *SMALL], capsys)
    assert status == 1 and out == ""
    assert re.search(message, one_error_line(err)), err
