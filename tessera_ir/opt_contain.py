"""tessera-opt's crash containment: the work runs in a forked worker, whose death becomes a
located error on the chunk it was processing.

Upstream MLIR's parser and passes can die on malformed IR (an assertion, a stack overflow)
instead of reporting it, taking the process along. ``context.check_text`` refuses the known
cases before parsing; for the rest, the supervisor (this process) turns the worker's death into
a located diagnostic on the chunk it was processing and goes on with the next chunk in a new
worker. The supervisor forks before importing the compiler (torch makes a fork cost ~20 ms;
before it, under 1 ms), so a run that crashes nothing costs one cheap fork and a pipe. The
worker's stderr goes to a file the supervisor copies out after every message, so IR dumps,
timing reports and diagnostics keep their order.

What the worker does is a ``Job`` (``tessera.opt`` has the one tessera-opt runs); this module
knows only its steps and the messages that report them.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

from .diagnostics import Diagnostic
from .errors import SourceLocation, TesseraError
from .opt_args import UsageError

Message = tuple[Any, ...]
Chunk = str | bytes  # IR text, or a whole bytecode input
Given = tuple[str, list[Chunk]]  # (source name, chunks), once read
Take = Callable[[bytes | None, list[Diagnostic]], None]

_STAGE_PROBLEM = {
    "setup": "the pass pipeline could not be set up for this IR (tessera-opt crashed: {})",
    "parse": "the IR could not be parsed (the parser crashed: {})",
    "verify": "the IR could not be verified (the verifier crashed: {})",
    "passes": "the pass pipeline crashed on this IR ({})",
    "print": "the result could not be printed (the printer crashed: {})",
}
_ASSERTION = re.compile(
    r"^[^\n]*?(?P<file>[^\s:]+):(?P<line>\d+): [^\n]*Assertion `(?P<text>.*)' failed\.$"
)
# What a worker sends last when it ends by itself.
_LAST_MESSAGES = ("done", "input-error", "usage-error", "error", "internal")
_CRASH_REPORT_START = ("PLEASE submit a bug report", "Stack dump:")


class CrashDiagnostic(Diagnostic):
    """The error that stands for a chunk whose worker died: never filtered out as a diagnostic
    that nothing expects (``--verify-diagnostics=only-expected``)."""


class InputError(TesseraError):
    """The input could not be read or is not text; ``str()`` is the whole diagnostic line."""


class InternalError(Exception):
    """A bug in tessera-opt itself, raised in the worker and carried to the supervisor."""

    def __init__(self, kind: str, message: str, trace: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.trace = trace


class Job(Protocol):
    """The work of one run, done in the worker."""

    def prepare(self) -> None:
        """Checks what can be checked before reading the input (the pipeline)."""

    def read(self) -> tuple[str, str, list[Chunk]]:
        """(source name, text, chunks) of the input; raises ``InputError``."""

    def process(
        self, chunk: Chunk, source: str, stage: Callable[[str], None]
    ) -> tuple[bytes | None, list[Diagnostic]]:
        """One chunk's output (None on failure) and diagnostics; ``stage`` is told each step
        before it starts, so that a crash can be put down to one."""


def _serve(send: Callable[[Message], None], job: Job, given: Given | None, start: int) -> None:
    """The worker's work: prepares, reads the input (unless ``given``), and processes the
    chunks from ``start``, sending each step and result."""
    try:
        job.prepare()
        if given is None:
            source, text, chunks = job.read()
            send(("input", source, text, chunks))
        else:
            source, chunks = given
        for index in range(start, len(chunks)):

            def stage(name: str, index: int = index) -> None:
                send(("stage", index, name))

            send(("result", index, *job.process(chunks[index], source, stage)))
        send(("done",))
    except InputError as problem:
        send(("input-error", str(problem)))
    except UsageError as problem:
        send(("usage-error", str(problem)))
    except TesseraError as problem:
        send(("error", str(problem)))
    except Exception as problem:
        send(("internal", type(problem).__name__, str(problem), traceback.format_exc()))


def run_contained(job: Job, take: Take) -> tuple[str, str]:
    """Processes the input chunk by chunk, handing ``take`` each chunk's result as it comes,
    and returns (source name, text). A chunk that crashed a worker gets one located error."""
    read: list[tuple[str, str, list[Chunk]]] = []  # (source, text, chunks), once read

    def receive(message: Message) -> None:
        kind = message[0]
        if kind == "input":
            read.append(message[1:])
        elif kind == "result":
            take(message[2], message[3])
        elif kind == "input-error":
            raise InputError(message[1])
        elif kind == "usage-error":
            raise UsageError(message[1])
        elif kind == "error":
            raise TesseraError(message[1])
        elif kind == "internal":
            raise InternalError(*message[1:])

    start = 0
    while True:
        given = (read[0][0], read[0][2]) if read else None
        crash = _one_worker(job, given, start, receive)
        if crash is None:
            break
        index, stage, detail = crash
        if not read:
            raise InternalError("crash", f"tessera-opt's worker died ({detail})", "")
        source, _, chunks = read[0]
        if index >= len(chunks):  # it died after its last result: nothing was lost
            break
        where = first_code_line(chunks[index], source)
        take(None, [CrashDiagnostic("error", _STAGE_PROBLEM[stage].format(detail), where)])
        start = index + 1
        if start >= len(chunks):
            break
    return read[0][0], read[0][1]


def _one_worker(
    job: Job, given: Given | None, start: int, receive: Callable[[Message], None]
) -> tuple[int, str, str] | None:
    """Runs ``_serve`` in a forked worker, handing ``receive`` each message as it arrives;
    returns None when the worker finished, or (chunk, stage, what killed it) when it died."""
    if not hasattr(os, "fork"):  # no fork (Windows): no containment
        _serve(receive, job, given, start)
        return None
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as errors:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _worker(write_end, errors.fileno(), job, given, start)
        os.close(write_end)
        relay = _Relay(errors.fileno())
        chunk, stage, finished = start, "setup", False
        try:
            with os.fdopen(read_end, "rb") as channel:
                while True:
                    try:
                        written, message = pickle.load(channel)
                    except Exception:  # the end, or a message cut short by the worker's death
                        break
                    relay.copy(written)
                    if message[0] == "stage":
                        chunk, stage = message[1], message[2]
                        continue
                    if message[0] == "result":
                        chunk, stage = message[1] + 1, "setup"
                    finished = message[0] in _LAST_MESSAGES
                    receive(message)
            _, status = os.waitpid(pid, 0)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        if finished and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            relay.copy(None)
            return None
        return chunk, stage, _death(status, relay.copy_until_crash_report())


def _worker(channel_fd: int, stderr_fd: int, job: Job, given: Given | None, start: int) -> NoReturn:
    """The forked side: runs ``_serve`` with its stderr in the relay file and its messages
    pickled into the pipe, then exits without running the supervisor's exit handlers."""
    os.dup2(stderr_fd, 2)
    channel = os.fdopen(channel_fd, "wb")

    def send(message: Message) -> None:
        # With each message goes how much stderr the worker had written by then: output
        # after the last message is the crash report, if the worker goes on to die.
        sys.stderr.flush()
        written = os.lseek(2, 0, os.SEEK_CUR)
        pickle.dump((written, message), channel, pickle.HIGHEST_PROTOCOL)
        channel.flush()

    try:
        _serve(send, job, given, start)
    finally:
        sys.stderr.flush()
        os._exit(0)


class _Relay:
    """Copies what the worker wrote to its stderr file onto ours, as it grows."""

    def __init__(self, fd: int) -> None:
        self.fd, self.offset = fd, 0

    def _new(self, end: int | None = None) -> bytes:
        """The bytes from where the last copy ended to ``end`` (None: to the end)."""
        data = b""
        while end is None or self.offset + len(data) < end:
            wanted = 1 << 16 if end is None else min(1 << 16, end - self.offset - len(data))
            chunk = os.pread(self.fd, wanted, self.offset + len(data))
            if not chunk:
                break
            data += chunk
        self.offset += len(data)
        return data

    def copy(self, end: int | None) -> None:
        data = self._new(end)
        if data:
            _write_stderr(data)

    def copy_until_crash_report(self) -> str:
        """Copies the worker's last output except the crash report, which it returns."""
        lines = self._new().decode("utf-8", "replace").splitlines(keepends=True)
        keep: list[str] = []
        report: list[str] = []
        for line in lines:
            if report or line.startswith(_CRASH_REPORT_START) or _ASSERTION.match(line.rstrip()):
                report.append(line)
            else:
                keep.append(line)
        if keep:
            _write_stderr("".join(keep).encode())
        return "".join(report)


def _write_stderr(data: bytes) -> None:
    """Writes the worker's bytes as they are (they may hold any encoding) after our own text."""
    sys.stderr.flush()
    if hasattr(sys.stderr, "buffer"):
        sys.stderr.buffer.write(data)
    else:  # a replaced stream (a test's capture) takes text only
        sys.stderr.write(data.decode("utf-8", "replace"))
    sys.stderr.flush()


def _death(status: int, report: str) -> str:
    """What ended the worker, in words: the signal and, for an assertion, its text and place."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        what = f"{signal.Signals(number).name} ({signal.strsignal(number)})"
    elif os.WIFEXITED(status):
        what = f"exit status {os.WEXITSTATUS(status)}"
    else:
        what = f"wait status {status}"
    for line in report.splitlines():
        found = _ASSERTION.match(line)
        if found is not None:
            file = found.group("file")
            file = file[file.find("mlir/") :] if "mlir/" in file else Path(file).name
            return f"assertion `{found.group('text')}' failed at {file}:{found.group('line')}"
    return what


def first_code_line(chunk: Chunk, source: str) -> SourceLocation:
    """Where a chunk's IR starts: its first line that is neither blank nor a comment (for
    bytecode, which has no lines, its start)."""
    if isinstance(chunk, bytes):
        return SourceLocation(source, 1, 1)
    for number, line in enumerate(chunk.split("\n"), start=1):
        if line.strip() and not line.lstrip().startswith("//"):
            return SourceLocation(source, number, 1)
    return SourceLocation(source, max(1, chunk.count("\n")), 1)
