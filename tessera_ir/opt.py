"""tessera-opt: runs tessera and upstream MLIR passes on IR text, following mlir-opt.

    tessera-opt input.mlir -p 'builtin.module(tessera-fuse)' -o out.mlir
    tessera-opt input.mlir --canonicalize --tessera-fuse-attention
    tessera-opt input.mlir --split-input-file --verify-diagnostics

Problems are printed as ``file:line:col: error: ...`` and make the exit status non-zero. No
input, however malformed, ends otherwise: the input must be UTF-8, inputs that crash MLIR's
parser are refused before parsing (``context.check_text``), and the work runs in a forked
worker whose death, should MLIR crash all the same, becomes a located error (see "crash
containment" below).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from . import knobs
from .diagnostics import Diagnostic, DiagnosticCollector, MLIRError, from_mlir_error
from .errors import LocatedError, SourceLocation, TesseraError

SPLIT_MARKER = "// -----"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessera-opt",
        description="Run tessera and upstream MLIR passes on IR. Any other --<pass>[=options] "
        "flag adds that pass (tessera or upstream) to the pipeline, in order.",
    )
    parser.add_argument("input", nargs="?", default="-", help="input file ('-' for stdin)")
    parser.add_argument("-o", dest="output", default="-", help="output file ('-' for stdout)")
    parser.add_argument(
        "-p",
        "--pass-pipeline",
        dest="pipeline",
        default=None,
        help="a textual pipeline, e.g. 'builtin.module(canonicalize,tessera-fuse)'",
    )
    parser.add_argument(
        "--split-input-file",
        action="store_true",
        help=f"process each '{SPLIT_MARKER}'-separated chunk on its own",
    )
    parser.add_argument(
        "--verify-diagnostics",
        action="store_true",
        help="check diagnostics against '// expected-error' comments",
    )
    parser.add_argument(
        "--mlir-print-ir-after-all",
        action="store_true",
        help="print the IR after every pass to stderr",
    )
    parser.add_argument(
        "--no-verify-each",
        action="store_true",
        help="skip the tessera verifier after each tessera pass",
    )
    parser.add_argument(
        "--allow-unregistered-dialect",
        action="store_true",
        help="accepted for mlir-opt compatibility (always on)",
    )
    parser.add_argument(
        "--list-passes", action="store_true", help="list tessera passes and pipelines, then exit"
    )
    return parser


def _pass_flags(extra: list[str]) -> tuple[list[str], list[str]]:
    """Splits unknown arguments into pass elements and leftovers that are errors."""
    elements, bad = [], []
    for arg in extra:
        if not arg.startswith("--") or len(arg) == 2:
            bad.append(arg)
            continue
        name, sep, options = arg[2:].partition("=")
        options = options.strip().strip("'\"")
        elements.append(f"{name}{{{options}}}" if sep and options else name)
    return elements, bad


def _list_passes() -> str:
    from .pass_registry import PASSES, PIPELINES, load_all

    load_all()
    lines = ["Tessera passes:"]
    for name in sorted(PASSES):
        doc = PASSES[name].doc.splitlines()[0] if PASSES[name].doc else ""
        lines.append(f"  --{name:32s} {doc}")
    lines.append("Tessera pipelines:")
    for name in sorted(PIPELINES):
        elements, doc = PIPELINES[name]
        lines.append(f"  --{name:32s} {doc} ({', '.join(elements)})")
    lines.append("Any upstream MLIR pass (canonicalize, cse, ...) is accepted too.")
    return "\n".join(lines)


def _chunks(text: str, split: bool) -> list[str]:
    """The chunks to process, each padded with newlines so line numbers stay the file's."""
    if not split:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    first_line = 0
    # Lines end at '\n' only, as MLIR counts them (str.splitlines also splits at '\f', ...).
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    for number, line in enumerate(lines):
        if (
            line.strip().startswith(SPLIT_MARKER)
            and line.strip()[len(SPLIT_MARKER) :].strip() == ""
        ):
            chunks.append("\n" * first_line + "".join(current))
            current, first_line = [], number + 1
            continue
        current.append(line)
    chunks.append("\n" * first_line + "".join(current))
    return chunks


def _process(
    chunk: str,
    source: str,
    pipeline: str,
    args: argparse.Namespace,
    stage: Callable[[str], None],
) -> tuple[str | None, list[Diagnostic]]:
    """Parses, verifies and runs the pipeline on one chunk: (output IR or None, diagnostics).
    ``stage`` is told each step before it starts, so that a crash can be put down to one."""
    output, diagnostics = _process_chunk(chunk, source, pipeline, args, stage)
    return output, [_located(d, chunk, source) for d in diagnostics]


def _located(diag: Diagnostic, chunk: str, source: str) -> Diagnostic:
    """``diag``, placed at the start of the chunk's IR when MLIR gave it no location (ops
    built without one, such as the bodies of linalg's named ops): every error has a place."""
    if diag.location is not None:
        return diag
    message = f"{diag.message} (reported without a location; shown at the start of the IR)"
    return Diagnostic(diag.severity, message, _first_code_line(chunk, source), diag.notes)


def _process_chunk(
    chunk: str,
    source: str,
    pipeline: str,
    args: argparse.Namespace,
    stage: Callable[[str], None],
) -> tuple[str | None, list[Diagnostic]]:
    from tessera.dialects import verify_module

    from .context import make_context, parse_module
    from .pipeline import build_pass_manager, expand, parse_pipeline

    context = make_context()
    collector = DiagnosticCollector(context)
    with collector.attached(), context:
        try:
            elements = expand(parse_pipeline(pipeline)) if pipeline else []
            manager = build_pass_manager(
                elements,
                context,
                verify_each=not args.no_verify_each,
                print_ir_after_all=args.mlir_print_ir_after_all,
            )
            stage("parse")
            module = parse_module(chunk, context, source)
        except LocatedError as problem:
            collector.add([Diagnostic("error", problem.message, problem.location)])
            return None, collector.diagnostics
        stage("verify")
        problems = verify_module(module.operation)
        if problems:
            collector.add([Diagnostic("error", p.message, p.location) for p in problems])
            return None, collector.diagnostics
        stage("passes")
        try:
            manager.run(module.operation)
        except MLIRError as error:
            collector.add(from_mlir_error(error))
        if collector.errors:
            return None, collector.diagnostics
        stage("print")
        return str(module), collector.diagnostics


def _check_pipeline(pipeline: str) -> None:
    """Builds the pipeline once so that unknown passes fail before any input is read."""
    from .context import make_context
    from .pipeline import build_pass_manager, expand, parse_pipeline

    if pipeline:
        build_pass_manager(expand(parse_pipeline(pipeline)), make_context())


class InputError(TesseraError):
    """The input could not be read or is not text; ``str()`` is the whole diagnostic line."""


def _read_input(args: argparse.Namespace) -> tuple[str, str]:
    """(source name, text) of the input, which must be UTF-8 like every MLIR file."""
    source = "<stdin>" if args.input == "-" else args.input
    try:
        data = sys.stdin.buffer.read() if args.input == "-" else Path(args.input).read_bytes()
    except OSError as problem:
        raise InputError(f"{source}: error: cannot read input: {problem.strerror}") from None
    try:
        return source, data.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        column = problem.start - (data.rfind(b"\n", 0, problem.start) + 1) + 1
        where = SourceLocation(source, line, column)
        byte = data[problem.start]
        raise InputError(
            Diagnostic(
                "error", f"the input is not UTF-8 text: {problem.reason} (byte 0x{byte:02x})", where
            ).format()
        ) from None


def run(argv: list[str]) -> int:
    args, extra = _parser().parse_known_args(argv)
    if args.list_passes:
        print(_list_passes())
        return 0
    flag_elements, bad = _pass_flags(extra)
    if bad:
        print(f"tessera-opt: error: unrecognized arguments: {' '.join(bad)}", file=sys.stderr)
        return 2
    if args.pipeline and flag_elements:
        print(
            "tessera-opt: error: give passes either as -p/--pass-pipeline or as flags, not both",
            file=sys.stderr,
        )
        return 2
    pipeline = args.pipeline or ",".join(flag_elements)

    outputs: list[str] = []
    failed = False
    all_diagnostics: list[Diagnostic] = []

    def take(output: str | None, diagnostics: list[Diagnostic]) -> None:
        nonlocal failed
        all_diagnostics.extend(diagnostics)
        if output is None:
            failed = True
        else:
            outputs.append(output.rstrip("\n") + "\n")
        if not args.verify_diagnostics:
            for diag in diagnostics:
                print(diag.format(), file=sys.stderr)

    try:
        source, text = run_contained(args, pipeline, take)
    except InputError as problem:
        print(problem, file=sys.stderr)
        return 1

    if args.verify_diagnostics:
        from .expected_diagnostics import check

        problems = check(text, source, all_diagnostics)
        for mismatch in problems:
            print(mismatch, file=sys.stderr)
        failed = bool(problems)

    rendered = f"{SPLIT_MARKER}\n".join(outputs)
    if args.output == "-":
        sys.stdout.write(rendered)
    else:
        try:
            Path(args.output).write_text(rendered)
        except OSError as problem:
            print(f"{args.output}: error: cannot write output: {problem.strerror}", file=sys.stderr)
            return 1
    return 1 if failed else 0


# ------------------------------------------------------------------------ crash containment
#
# Upstream MLIR's parser and passes can die on malformed IR (an assertion, a stack overflow)
# instead of reporting it, taking the process along. check_text() refuses the known cases
# before parsing; for the rest, the work runs in a forked worker, and the supervisor (this
# process) turns the worker's death into a located diagnostic on the chunk it was processing
# and goes on with the next chunk in a new worker. The supervisor forks before importing the
# compiler (torch makes a fork cost ~20 ms; before it, under 1 ms), so a run that crashes
# nothing costs one cheap fork and a pipe. The worker's stderr goes to a file the supervisor
# copies out after every message, so IR dumps and diagnostics keep their order.

Message = tuple[Any, ...]
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
_LAST_MESSAGES = ("done", "input-error", "error", "internal")
_CRASH_REPORT_START = ("PLEASE submit a bug report", "Stack dump:")


class InternalError(Exception):
    """A bug in tessera-opt itself, raised in the worker and carried to the supervisor."""

    def __init__(self, kind: str, message: str, trace: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.trace = trace


def _serve(
    send: Callable[[Message], None],
    args: argparse.Namespace,
    pipeline: str,
    given: tuple[str, list[str]] | None,
    start: int,
) -> None:
    """The worker: checks the pipeline, reads the input (unless ``given``), and processes the
    chunks from ``start``, sending each step and result."""
    try:
        _check_pipeline(pipeline)
        if given is None:
            source, text = _read_input(args)
            chunks = _chunks(text, args.split_input_file)
            send(("input", source, text, chunks))
        else:
            source, chunks = given
        for index in range(start, len(chunks)):

            def stage(name: str, index: int = index) -> None:
                send(("stage", index, name))

            send(("result", index, *_process(chunks[index], source, pipeline, args, stage)))
        send(("done",))
    except InputError as problem:
        send(("input-error", str(problem)))
    except TesseraError as problem:
        send(("error", str(problem)))
    except Exception as problem:
        send(("internal", type(problem).__name__, str(problem), traceback.format_exc()))


def run_contained(
    args: argparse.Namespace,
    pipeline: str,
    take: Callable[[str | None, list[Diagnostic]], None],
) -> tuple[str, str]:
    """Processes the input chunk by chunk, handing ``take`` each chunk's result as it comes,
    and returns (source name, text). A chunk that crashed a worker gets one located error."""
    read: list[tuple[str, str, list[str]]] = []  # (source, text, chunks), once read

    def receive(message: Message) -> None:
        kind = message[0]
        if kind == "input":
            read.append(message[1:])
        elif kind == "result":
            take(message[2], message[3])
        elif kind == "input-error":
            raise InputError(message[1])
        elif kind == "error":
            raise TesseraError(message[1])
        elif kind == "internal":
            raise InternalError(*message[1:])

    start = 0
    while True:
        given = (read[0][0], read[0][2]) if read else None
        crash = _one_worker(args, pipeline, given, start, receive)
        if crash is None:
            break
        index, stage, detail = crash
        if not read:
            raise InternalError("crash", f"tessera-opt's worker died ({detail})", "")
        source, _, chunks = read[0]
        if index >= len(chunks):  # it died after its last result: nothing was lost
            break
        where = _first_code_line(chunks[index], source)
        take(None, [Diagnostic("error", _STAGE_PROBLEM[stage].format(detail), where)])
        start = index + 1
        if start >= len(chunks):
            break
    return read[0][0], read[0][1]


def _one_worker(
    args: argparse.Namespace,
    pipeline: str,
    given: tuple[str, list[str]] | None,
    start: int,
    receive: Callable[[Message], None],
) -> tuple[int, str, str] | None:
    """Runs ``_serve`` in a forked worker, handing ``receive`` each message as it arrives;
    returns None when the worker finished, or (chunk, stage, what killed it) when it died."""
    if not hasattr(os, "fork"):  # no fork (Windows): no containment
        _serve(receive, args, pipeline, given, start)
        return None
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as errors:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _worker(write_end, errors.fileno(), args, pipeline, given, start)
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


def _worker(
    channel_fd: int,
    stderr_fd: int,
    args: argparse.Namespace,
    pipeline: str,
    given: tuple[str, list[str]] | None,
    start: int,
) -> NoReturn:
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
        _serve(send, args, pipeline, given, start)
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


def _first_code_line(chunk: str, source: str) -> SourceLocation:
    """Where a chunk's IR starts: its first line that is neither blank nor a comment."""
    for number, line in enumerate(chunk.split("\n"), start=1):
        if line.strip() and not line.lstrip().startswith("//"):
            return SourceLocation(source, number, 1)
    return SourceLocation(source, max(1, chunk.count("\n")), 1)


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except InternalError as problem:
        if knobs.debug():
            print(problem.trace, file=sys.stderr, end="")
        print(
            f"tessera-opt: internal error: {problem} (set TESSERA_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        code = 1
    except TesseraError as problem:
        print(f"tessera-opt: error: {problem}", file=sys.stderr)
        code = 1
    except Exception as problem:
        if knobs.debug():
            traceback.print_exc()
        print(
            f"tessera-opt: internal error: {type(problem).__name__}: {problem} "
            "(set TESSERA_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
