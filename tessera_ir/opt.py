"""tessera-opt: runs tessera and upstream MLIR passes on IR text, following mlir-opt.

    tessera-opt input.mlir -p 'builtin.module(tessera-fuse)' -o out.mlir
    tessera-opt input.mlir --canonicalize --tessera-fuse-attention
    tessera-opt input.mlir --split-input-file --verify-diagnostics

Problems are printed as ``file:line:col: error: ...`` and make the exit status non-zero.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from . import knobs
from .diagnostics import Diagnostic, DiagnosticCollector, MLIRError, from_mlir_error
from .errors import LocatedError, TesseraError

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
    for number, line in enumerate(text.splitlines(keepends=True)):
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
    chunk: str, source: str, pipeline: str, args: argparse.Namespace
) -> tuple[str | None, list[Diagnostic]]:
    """Parses, verifies and runs the pipeline on one chunk: (output IR or None, diagnostics)."""
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
            module = parse_module(chunk, context, source)
        except LocatedError as problem:
            collector.add([Diagnostic("error", problem.message, problem.location)])
            return None, collector.diagnostics
        problems = verify_module(module.operation)
        if problems:
            collector.add([Diagnostic("error", p.message, p.location) for p in problems])
            return None, collector.diagnostics
        try:
            manager.run(module.operation)
        except MLIRError as error:
            collector.add(from_mlir_error(error))
        if collector.errors:
            return None, collector.diagnostics
        return str(module), collector.diagnostics


def _check_pipeline(pipeline: str) -> None:
    """Builds the pipeline once so that unknown passes fail before any input is read."""
    from .context import make_context
    from .pipeline import build_pass_manager, expand, parse_pipeline

    if pipeline:
        build_pass_manager(expand(parse_pipeline(pipeline)), make_context())


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
    _check_pipeline(pipeline)

    if args.input == "-":
        source, text = "<stdin>", sys.stdin.read()
    else:
        source = args.input
        try:
            text = Path(args.input).read_text()
        except OSError as problem:
            print(f"{args.input}: error: cannot read input: {problem.strerror}", file=sys.stderr)
            return 1

    outputs: list[str] = []
    failed = False
    all_diagnostics: list[Diagnostic] = []
    for chunk in _chunks(text, args.split_input_file):
        output, diagnostics = _process(chunk, source, pipeline, args)
        all_diagnostics += diagnostics
        if output is None:
            failed = True
        else:
            outputs.append(output.rstrip("\n") + "\n")
        if not args.verify_diagnostics:
            for diag in diagnostics:
                print(diag.format(), file=sys.stderr)

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


def main() -> None:
    try:
        code = run(sys.argv[1:])
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
