"""tessera-opt: runs tessera and upstream MLIR passes on IR, following mlir-opt.

    tessera-opt input.mlir -pass-pipeline='builtin.module(tessera-fuse)' -o out.mlir
    tessera-opt input.mlir -canonicalize --tessera-schedule-async-copies=stages=3
    tessera-opt input.mlir -split-input-file -verify-diagnostics

The command line is mlir-opt's (``opt_args``): one dash or two, ``-<pass>[=<options>]`` flags,
the ``--mlir-print-*``, timing, statistics and bytecode options, through the MLIR bindings'
``PassManager`` and printers. Problems are printed as ``file:line:col: error: ...`` and make the
exit status 1; a command line that cannot run makes it 2. No input, however malformed, ends
otherwise: the input must be UTF-8 text or MLIR bytecode, inputs that crash MLIR's parser are
refused before parsing (``context.check_text``), and the work runs in a forked worker whose
death, should MLIR crash all the same, becomes a located error (``opt_contain``).
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import knobs
from .diagnostics import Diagnostic
from .errors import LocatedError, ParseError, SourceLocation, TesseraError
from .opt_args import (
    Options,
    UsageError,
    help_text,
    parse_args,
    version_text,
)
from .opt_contain import (
    Chunk,
    CrashDiagnostic,
    InputError,
    InternalError,
    first_code_line,
    run_contained,
)
from .opt_passes import (
    check_bytecode_version,
    check_pipeline,
    list_passes,
    pass_manager,
    resolve_pass_flags,
)

if TYPE_CHECKING:
    from mlir import ir

# Every MLIR bytecode file starts with these bytes ("ML\xefR"); mlir-opt reads such input as
# bytecode, whatever its name.
BYTECODE_MAGIC = b"ML\xefR"


class _Job:
    """One tessera-opt run, done in the worker (``opt_contain.Job``)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.pipeline = ""

    def prepare(self) -> None:
        """Turns pass flags into a pipeline and builds it once, so that unknown passes and bad
        options fail before any input is read."""
        if self.options.pass_flags:
            self.pipeline = ",".join(resolve_pass_flags(self.options.pass_flags))
        else:
            self.pipeline = self.options.pass_pipeline or ""
        check_pipeline(self.pipeline)
        if self.options.emit_bytecode_version is not None:
            check_bytecode_version(self.options.emit_bytecode_version)
        if self.options.print_ir_tree_dir is not None:
            # MLIR reports a folder it cannot create on stderr and goes on without the dumps.
            try:
                os.makedirs(self.options.print_ir_tree_dir, exist_ok=True)
            except OSError as problem:
                raise UsageError(
                    f"--mlir-print-ir-tree-dir={self.options.print_ir_tree_dir}: cannot create "
                    f"the folder: {problem.strerror}"
                ) from None

    def read(self) -> tuple[str, str, list[Chunk]]:
        source, data = _read_input(self.options.input)
        if data.startswith(BYTECODE_MAGIC):
            return source, "", [data]  # bytecode has no marker lines: one chunk
        text = _decode(data, source)
        return source, text, list(_chunks(text, self.options.split_marker))

    def process(
        self, chunk: Chunk, source: str, stage: Callable[[str], None]
    ) -> tuple[bytes | None, list[Diagnostic]]:
        output, diagnostics = _process_chunk(chunk, source, self.pipeline, self.options, stage)
        return output, [_located(d, chunk, source) for d in diagnostics]


def _chunks(text: str, marker: str | None) -> list[str]:
    """The chunks to process, each padded with newlines so line numbers stay the file's: one,
    or (``marker`` given) those between lines that hold only the marker."""
    if marker is None:
        return [text]
    marker = marker.strip()
    chunks: list[str] = []
    current: list[str] = []
    first_line = 0
    # Lines end at '\n' only, as MLIR counts them (str.splitlines also splits at '\f', ...).
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    for number, line in enumerate(lines):
        if line.strip() == marker:
            chunks.append("\n" * first_line + "".join(current))
            current, first_line = [], number + 1
            continue
        current.append(line)
    chunks.append("\n" * first_line + "".join(current))
    return chunks


def _located(diag: Diagnostic, chunk: Chunk, source: str) -> Diagnostic:
    """``diag``, placed at the start of the chunk's IR when MLIR gave it no location (ops
    built without one, such as the bodies of linalg's named ops): every error has a place."""
    if diag.location is not None:
        return diag
    message = f"{diag.message} (reported without a location; shown at the start of the IR)"
    return Diagnostic(diag.severity, message, first_code_line(chunk, source), diag.notes)


def _process_chunk(
    chunk: Chunk,
    source: str,
    pipeline: str,
    options: Options,
    stage: Callable[[str], None],
) -> tuple[bytes | None, list[Diagnostic]]:
    """Parses, verifies and runs the pipeline on one chunk: (output or None, diagnostics)."""
    from tessera.dialects import verify_module

    from .context import make_context
    from .diagnostics import DiagnosticCollector, MLIRError, from_mlir_error

    context = make_context()
    if options.disable_threading:
        context.enable_multithreading(False)
    collector = DiagnosticCollector(context)
    with collector.attached(), context:
        try:
            manager = pass_manager(pipeline, context, options)
            stage("parse")
            module = _parse(chunk, context, source)
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
        # The timing report is printed when the pass manager goes (once per chunk, as in
        # mlir-opt): now, so that it comes before the chunk's diagnostics, not at exit.
        del manager
        if collector.errors:
            return None, collector.diagnostics
        stage("print")
        return _render(module, options), collector.diagnostics


def _parse(chunk: Chunk, context: ir.Context, source: str) -> ir.Module:
    from mlir import ir

    from .context import parse_module
    from .diagnostics import MLIRError, from_mlir_error

    if isinstance(chunk, str):
        return parse_module(chunk, context, source)
    try:
        return ir.Module.parse(chunk, context)
    except MLIRError as error:
        # The bytecode reader's errors name no place in the file ("-":0:0).
        first = from_mlir_error(error)[0]
        raise ParseError(
            f"cannot read the bytecode: {first.message}", SourceLocation(source, 1, 1)
        ) from None


def _render(module: ir.Module, options: Options) -> bytes:
    """The module as bytecode or as text, as the options ask."""
    if options.emit_bytecode:
        buffer = io.BytesIO()
        module.operation.write_bytecode(buffer, desired_version=options.emit_bytecode_version)
        return buffer.getvalue()
    text = str(
        module.operation.get_asm(
            large_elements_limit=options.elide_elements_if_larger,
            enable_debug_info=options.print_debuginfo,
            print_generic_op_form=options.print_op_generic,
        )
    )
    return (text.rstrip("\n") + "\n").encode()


def _read_input(path: str) -> tuple[str, bytes]:
    """(source name, bytes) of the input."""
    source = "<stdin>" if path == "-" else path
    try:
        return source, sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as problem:
        raise InputError(f"{source}: error: cannot read input: {problem.strerror}") from None


def _decode(data: bytes, source: str) -> str:
    """The input as text, which must be UTF-8 like every MLIR file."""
    try:
        return data.decode("utf-8")
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


def _expected_only(diagnostics: list[Diagnostic], text: str) -> list[Diagnostic]:
    """``--verify-diagnostics=only-expected``: the diagnostics some comment expects (a note
    counts on its own), so that no other is reported as unexpected; a crash is always kept."""
    from .expected_diagnostics import expectations

    wanted = expectations(text)
    kept: list[Diagnostic] = []
    pending = list(diagnostics)
    while pending:
        diag = pending.pop(0)
        pending[:0] = diag.notes
        line = diag.location.line if diag.location else None
        if isinstance(diag, CrashDiagnostic) or any(
            w.severity == diag.severity and w.line == line and w.text in diag.message
            for w in wanted
        ):
            kept.append(Diagnostic(diag.severity, diag.message, diag.location))
    return kept


def _write_output(path: str, data: bytes) -> None:
    if path != "-":
        Path(path).write_bytes(data)
    elif hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:  # a replaced stream (a test's capture) takes text only
        sys.stdout.write(data.decode("utf-8", "replace"))


def run(argv: list[str]) -> int:
    """tessera-opt on ``argv``; the exit status (0, 1 for problems, 2 for usage errors)."""
    try:
        options = parse_args(argv)
        if options.help or options.version or options.list_passes:
            if options.pass_flags:  # checked as any other run would, before doing nothing
                resolve_pass_flags(options.pass_flags)
            if options.help:
                print(help_text())
            elif options.version:
                print(version_text())
            else:
                print(list_passes())
            return 0
    except UsageError as problem:
        print(f"tessera-opt: error: {problem}", file=sys.stderr)
        return 2

    outputs: list[bytes] = []
    failed = False
    all_diagnostics: list[Diagnostic] = []

    def take(output: bytes | None, diagnostics: list[Diagnostic]) -> None:
        nonlocal failed
        all_diagnostics.extend(diagnostics)
        if output is None:
            failed = True
        else:
            outputs.append(output)
        if options.verify_diagnostics is None:
            for diag in diagnostics:
                print(diag.format(), file=sys.stderr)

    try:
        source, text = run_contained(_Job(options), take)
    except InputError as problem:
        print(problem, file=sys.stderr)
        return 1
    except UsageError as problem:
        print(f"tessera-opt: error: {problem}", file=sys.stderr)
        return 2

    if options.verify_diagnostics is not None:
        from .expected_diagnostics import check

        if options.verify_diagnostics == "only-expected":
            all_diagnostics = _expected_only(all_diagnostics, text)
        problems = check(text, source, all_diagnostics)
        for mismatch in problems:
            print(mismatch, file=sys.stderr)
        failed = bool(problems)

    rendered = f"{options.output_split_marker}\n".encode().join(outputs)
    try:
        _write_output(options.output, rendered)
    except OSError as problem:
        print(f"{options.output}: error: cannot write output: {problem.strerror}", file=sys.stderr)
        return 1
    return 1 if failed else 0


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
    except BrokenPipeError:
        # Whoever read stdout stopped (`tessera-opt --help | head`): not an error of ours, but
        # the output is cut short. stdout goes to /dev/null so that the flush at exit is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
