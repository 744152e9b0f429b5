"""The passes of a tessera-opt run: pass flags made into a pipeline, the pipeline checked before
any input is read, and each chunk's pass manager with the instrumentation the options ask for
(IR dumps, timing, statistics, the verifier), through the MLIR bindings' ``PassManager``.

Runs in tessera-opt's worker (``opt_contain``): it loads MLIR and the pass registry.
"""

from __future__ import annotations

import io
import re
import sys
from typing import TYPE_CHECKING

from .errors import PassError
from .opt_args import Options, PassFlag, UsageError, unknown_option

if TYPE_CHECKING:
    from mlir import ir, passmanager

# The binding's complaint when a pass flag names no pass, and when a pass is tied to one op
# (such a pass given as a flag is nested into that op, as mlir-opt's implicit nesting does).
_NOT_A_PASS = "does not refer to a registered pass or pass pipeline"
_RESTRICTED = re.compile(r"restricted to '(?P<op>[\w.$-]+)' on a PassManager intended to run on")


def resolve_pass_flags(flags: list[PassFlag]) -> list[str]:
    """The pipeline elements of ``-<pass>[=<options>]`` flags, in order. A name that is no
    tessera pass or pipeline and no registered upstream pass is a ``UsageError`` naming the
    flag; a pass tied to one op (``func.func``) is nested into it, as in mlir-opt."""
    from mlir import ir, passmanager

    from .context import make_context
    from .pass_registry import PASSES, PIPELINES, load_all, pipeline_has_options

    load_all()
    known = [*PASSES, *PIPELINES]
    elements: list[str] = []
    context = make_context()
    for flag in flags:
        element = flag.element()
        if flag.name in PIPELINES and flag.options and not pipeline_has_options(flag.name):
            raise UsageError(f"{flag.spelling}: the pipeline '{flag.name}' takes no options")
        if flag.name in known:
            elements.append(element)
            continue
        if flag.name.startswith("tessera-"):
            raise UsageError(unknown_option(flag.spelling, known))
        with context, ir.Location.unknown():
            try:
                passmanager.PassManager("builtin.module").add(element)
            except ValueError as problem:
                if _NOT_A_PASS in str(problem):
                    raise UsageError(unknown_option(flag.spelling, known)) from None
                restricted = _RESTRICTED.search(str(problem))
                if restricted is not None:
                    element = f"{restricted.group('op')}({element})"
                # Any other complaint (a bad option) is reported when the pipeline is built,
                # in the words used for --pass-pipeline.
        elements.append(element)
    return elements


def check_pipeline(pipeline: str) -> None:
    """Builds the pipeline once, so that unknown passes and bad options fail before any input is
    read; a tessera pipeline given options is refused (it has none to take them)."""
    from .context import make_context
    from .pass_registry import PIPELINES, load_all, pipeline_has_options
    from .pipeline import build_pass_manager, expand, parse_pipeline

    if not pipeline:
        return
    load_all()
    elements = parse_pipeline(pipeline)
    for element in elements:
        if element.name in PIPELINES and element.options and not pipeline_has_options(element.name):
            raise PassError(f"the pipeline '{element.name}' takes no options: '{element.text()}'")
    build_pass_manager(expand(elements), make_context())


def check_bytecode_version(version: int) -> None:
    """Writes an empty module at ``version``, so that one MLIR cannot write is refused up front
    (with MLIR's own words: which versions it can write)."""
    from mlir import ir

    from .context import make_context
    from .diagnostics import DiagnosticCollector

    context = make_context()
    collector = DiagnosticCollector(context)
    with collector.attached(), context, ir.Location.unknown():
        try:
            ir.Module.create().operation.write_bytecode(io.BytesIO(), desired_version=version)
        except ValueError as problem:
            detail = collector.diagnostics[0].message if collector.diagnostics else str(problem)
            raise UsageError(f"--emit-bytecode-version={version}: {detail}") from None


def pass_manager(pipeline: str, context: ir.Context, options: Options) -> passmanager.PassManager:
    """The chunk's pass manager, with the instrumentation the options ask for."""
    from mlir import passmanager

    from .pipeline import build_pass_manager, expand, parse_pipeline

    elements = expand(parse_pipeline(pipeline)) if pipeline else []
    manager = build_pass_manager(elements, context, verify_each=options.verify_each)
    manager.enable_verifier(options.verify_each)
    if options.prints_ir:
        # The bindings print after a pass only when asked to print after every pass; mlir-opt's
        # after-failure alone means "after every pass, but only on failure", which is this.
        manager.enable_ir_printing(
            print_before_all=options.print_ir_before_all,
            print_after_all=options.print_ir_after_all or options.print_ir_after_failure,
            print_module_scope=options.print_ir_module_scope,
            print_after_change=options.print_ir_after_change,
            print_after_failure=options.print_ir_after_failure,
            large_elements_limit=options.elide_elements_if_larger,
            enable_debug_info=options.print_debuginfo,
            print_generic_op_form=options.print_op_generic,
            tree_printing_dir_path=options.print_ir_tree_dir,
        )
    if options.timing:
        manager.enable_timing()
    if options.pass_statistics:
        display = passmanager.PassDisplayMode
        manager.enable_statistics(
            display.LIST if options.pass_statistics_display == "list" else display.PIPELINE
        )
    if options.dump_pass_pipeline:
        # mlir-opt's OpPassManager::dump, then its extra blank line.
        print(f"Pass Manager with {len(elements)} passes:\n{manager}\n", file=sys.stderr)
        sys.stderr.flush()
    return manager


def list_passes() -> str:
    """``--list-passes``: tessera's passes and pipelines with the first line of their help."""
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
