"""Runs tessera-opt's own entry point on one input in a forked child, and judges how it ended.

The fuzzing process imports the compiler once; each case is a fork of it that calls
``tessera.opt.main()`` with the case's arguments, its stdin at /dev/null and its stdout and
stderr in files. A fork costs milliseconds where a fresh interpreter costs seconds, and a crash,
a hang or a memory blow-up ends only that child: the parent sees the signal, kills the group on
timeout, and caps the address space so that a runaway allocation fails instead of swapping.

The contract a case is judged against, whatever its input: the run ends with exit status 0
(and no ``error:`` printed) or 1 with at least one located diagnostic ``<input>:line:col:
error: ...``; never a signal, a hang, a Python traceback, an "internal error" (a bug: an
exception no check anticipated), or an error without a place.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Outcome:
    """How one run ended: exit status or signal, wall time, peak memory, what it printed."""

    status: int | None  # exit status, or None when a signal ended it
    signal: int | None
    timed_out: bool
    seconds: float
    max_rss_mib: float
    stdout: str
    stderr: str


def prepare() -> None:
    """Imports everything a run needs, once, so that every forked case starts warm."""
    from tessera import opt  # noqa: F401
    from tessera.pass_registry import load_all

    load_all()
    import tessera.context
    import tessera.dialects
    import tessera.pipeline  # noqa: F401


def _child(argv: list[str], stdout: Path, stderr: Path, memory_bytes: int | None) -> None:
    """The forked side: becomes tessera-opt and never returns."""
    code = 70
    try:
        os.setpgid(0, 0)
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        from tessera import opt

        sys.argv = ["tessera-opt", *argv]
        try:
            opt.main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # anything tessera-opt itself let escape
        import traceback

        traceback.print_exc()
        code = 71
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


class Running:
    """One case in flight; ``poll()`` returns its ``Outcome`` once it has ended."""

    def __init__(
        self,
        argv: list[str],
        workdir: Path,
        timeout: float,
        memory_bytes: int | None,
    ) -> None:
        self.stdout, self.stderr = workdir / "stdout", workdir / "stderr"
        self.timeout = timeout
        sys.stdout.flush()
        sys.stderr.flush()
        self.start = time.monotonic()
        self.timed_out = False
        pid = os.fork()
        if pid == 0:
            _child(argv, self.stdout, self.stderr, memory_bytes)
        self.pid = pid

    def wait(self) -> Outcome:
        while (outcome := self.poll()) is None:
            time.sleep(0.005)
        return outcome

    def poll(self) -> Outcome | None:
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            if time.monotonic() - self.start > self.timeout:
                self.timed_out = True
                _kill_group(self.pid)
                pid, status, usage = os.wait4(self.pid, 0)
            else:
                return None
        _kill_group(self.pid)  # any worker the case left behind
        return Outcome(
            status=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            timed_out=self.timed_out,
            seconds=time.monotonic() - self.start,
            max_rss_mib=usage.ru_maxrss / 1024,
            stdout=_read(self.stdout),
            stderr=_read(self.stderr),
        )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def verdict(outcome: Outcome, input_path: str) -> str | None:
    """Why a run broke the contract, or None when it kept it."""
    err = outcome.stderr
    if outcome.timed_out:
        return "hang"
    if outcome.signal is not None:
        if "bad_alloc" in err:
            return "out of memory (signal)"
        return f"killed by {signal.Signals(outcome.signal).name}"
    if _TRACEBACK in err:
        return "python traceback"
    if "MemoryError" in err:
        return "out of memory"
    if "internal error" in err:
        return "internal error"
    if outcome.status == 0:
        return "exit 0 with an error" if re.search(r"(^|\s)error:", err) else None
    if outcome.status != 1:
        return f"exit status {outcome.status}"
    # MLIR's lines and columns start at 1; "0:0" is its way of saying "nowhere".
    located = re.compile(rf"^{re.escape(input_path)}:[1-9]\d*:[1-9]\d*: error: ", re.MULTILINE)
    if not located.search(err):
        return "error without a location"
    return None
