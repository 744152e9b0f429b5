"""Logging and progress: the ``tessera`` logger is silent unless TESSERA_LOG turns it on, then
says one line per compile stage (and the cache's hit or miss); progress bars are drawn only
on a terminal."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera import TesseraError, knobs, log
from tessera.models.tiny import tiny_gemma

NAME = "gemma1-mqa"
CHILD_SECONDS = 600

# A miss, then a hit, in one process.
COMPILE_TWICE = """
import tessera
from tessera.models.tiny import tiny_gemma

model = tiny_gemma("gemma1-mqa")
tessera.compile(model)
tessera.compile(model)
"""


class Terminal(io.StringIO):
    """A stream that says it is a terminal (of unknown size, like a bare pseudo-terminal)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def configured() -> Iterator[None]:
    """Gives the logger its environment's set-up back after a test changes it."""
    yield
    log.configure(knobs.log_level())


def compile_in_child(cache: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if k != "TESSERA_LOG"}
    variables.update(environment, TESSERA_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COMPILE_TWICE)],
        capture_output=True,
        text=True,
        env=variables,
        timeout=CHILD_SECONDS,
        check=False,
    )


def test_info_logs_a_line_per_stage_and_the_cache_outcome(tmp_path: Path) -> None:
    done = compile_in_child(tmp_path / "cache", TESSERA_LOG="info")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    stages = [line.split(":")[1].split()[1] for line in lines if ": stage " in line]
    # The build's stages once; the second compile finds the entry by the module's fingerprint
    # (no trace, no stage).
    assert stages == ["high", "mid", "abi", "linalg", "llvm", "artifact"]
    mid = next(line for line in lines if ": stage mid: " in line)
    assert mid.startswith("tessera.compile: stage mid: ")
    assert "fused tessera.attention.flash x2" in mid and "tessera.mlp.swi_glu x2" in mid
    assert any(line.startswith("tessera.cache: cache miss ") for line in lines)
    assert any(
        line.startswith("tessera.compile: cache hit ") and "fingerprint (no trace)" in line
        for line in lines
    )
    finished = [line for line in lines if line.startswith("tessera.compile: compiled for cpu")]
    assert [line.rpartition("(")[2] for line in finished] == ["built)", "cache hit)"]
    # Every line is the logger's: nothing else was printed.
    assert all(line.startswith("tessera.") for line in lines), lines


def test_silent_by_default(tmp_path: Path) -> None:
    done = compile_in_child(tmp_path / "cache")
    assert done.returncode == 0 and done.stderr == ""
    done = compile_in_child(tmp_path / "other", TESSERA_LOG="off")
    assert done.returncode == 0 and done.stderr == ""


def test_debug_logs_more_than_info(
    configured: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    area = log.get("cache")
    monkeypatch.setenv("TESSERA_LOG", "info")
    log.configure(knobs.log_level())
    area.debug("detail")
    area.info("summary")
    assert capsys.readouterr().err == "tessera.cache: summary\n"
    monkeypatch.setenv("TESSERA_LOG", "DEBUG")
    log.configure(knobs.log_level())
    area.debug("detail")
    assert capsys.readouterr().err == "tessera.cache: detail\n"


def test_unconfigured_records_go_only_where_the_application_sends_them(
    configured: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    log.configure(None)
    with caplog.at_level(logging.INFO, logger="tessera"):
        log.get("compile").info("stage mid: 1.00 s")
    assert capsys.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records] == ["stage mid: 1.00 s"]


def test_turned_on_it_does_not_also_reach_the_root_logger(
    configured: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    log.configure(logging.INFO)
    with caplog.at_level(logging.INFO):
        log.get("compile").info("once")
    assert capsys.readouterr().err == "tessera.compile: once\n"
    assert caplog.records == []


@pytest.mark.parametrize("value", ["verbose", "2", "trace"])
def test_a_bad_level_is_named(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_LOG", value)
    with pytest.raises(TesseraError, match=rf"TESSERA_LOG='{value}' is not a log level"):
        knobs.log_level()


def test_no_bar_unless_on_a_terminal() -> None:
    piped = io.StringIO()
    with log.Progress(3, "compile", unit="stage", stream=piped) as progress:
        assert not progress.shown
        progress.describe("mid")
        progress.advance()
    assert piped.getvalue() == ""
    assert list(log.track([1, 2, 3], "loading", unit="tensor", stream=piped)) == [1, 2, 3]
    assert piped.getvalue() == ""


def test_a_bar_on_a_terminal_shows_the_stage_and_goes_when_done() -> None:
    screen = Terminal()
    with log.Stages(["mid", "llvm"], stream=screen) as stages:
        with stages.run("mid"):
            pass
        with stages.run("llvm"):
            pass
    shown = screen.getvalue()
    assert "compile mid:   0%|" in shown and "compile llvm:  50%|" in shown
    assert "2/2 stages" in shown
    # Cleared when closed: the last thing drawn is a blank line over the bar.
    assert shown.rstrip("\r").rpartition("\r")[2].strip() == ""
    screen = Terminal()
    assert list(log.track(iter("abc"), "loading", unit="tensor", total=3, stream=screen)) == [
        "a",
        "b",
        "c",
    ]
    assert "3/3 tensors" in screen.getvalue()


def test_log_lines_are_written_above_an_open_bar(
    configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    log.configure(logging.INFO)
    with log.Stages(["mid"]) as stages, stages.run("mid") as step:
        step.note("fused tessera.norm.rms x3")
    lines = screen.getvalue().split("\n")
    (line,) = [line for line in lines if "tessera.compile: stage mid" in line]
    # The bar was cleared from the line (carriage return, blanks, carriage return) first.
    assert line.rpartition("\r")[2].startswith("tessera.compile: stage mid: ")
    assert line.endswith(", fused tessera.norm.rms x3")


def read_terminal(command: list[str], environment: dict[str, str]) -> tuple[int, str]:
    """Runs ``command`` with stderr on a pseudo-terminal of 100 columns; (status, stderr)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=environment,
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + CHILD_SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=CHILD_SECONDS), shown.decode(errors="replace")


def test_the_command_draws_a_bar_per_stage_on_a_terminal(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "TESSERA_LOG"}
    environment["TESSERA_CACHE_DIR"] = str(tmp_path / "cache")
    command = [sys.executable, "-m", "tessera.cli", "compile", f"tiny:{NAME}", "-t", "cpu"]
    status, shown = read_terminal([*command, "-o", str(tmp_path / "out")], environment)
    assert status == 0, shown
    for stage in ("mid", "abi", "linalg", "llvm", "artifact"):
        assert f"compile {stage}:" in shown
    assert "5/5 stages" in shown
    # A cache hit builds nothing, so draws nothing.
    status, shown = read_terminal([*command, "-o", str(tmp_path / "again")], environment)
    assert status == 0 and shown == ""


def test_loading_a_checkpoint_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    tiny_gemma(NAME).save_pretrained(folder)
    load = "import sys, tessera.checkpoints as c; c.load_hf_checkpoint(sys.argv[1])"
    environment = {k: v for k, v in os.environ.items() if k != "TESSERA_LOG"}
    status, shown = read_terminal([sys.executable, "-c", load, str(folder)], environment)
    assert status == 0, shown
    assert "loading weights:   0%|" in shown
    assert re.search(r"loading weights: 100%\|.*\| (\d+)/\1 tensors", shown), shown
