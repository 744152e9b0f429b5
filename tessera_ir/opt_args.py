"""tessera-opt's command line, read the way mlir-opt (LLVM's ``cl``) reads its own.

Every option is one word that may be spelled with one dash or two (``-split-input-file`` is
``--split-input-file``). A value follows ``=`` (``-pass-pipeline=...``) or, for options that
need one, comes as the next argument (``-o out.mlir``, ``-p 'builtin.module(cse)'``). There is
no prefix matching of any kind: a word is an option only when it is exactly one, so
``-pass-pipeline=...`` can never be read as ``-p`` with the value ``ass-pipeline=...`` (what
argparse did), nor ``-ofile`` as ``-o file``, nor ``--split`` as ``--split-input-file``. Any
other ``-<name>[=<options>]`` names a pass, in order, as in mlir-opt; whether that pass exists
is known only once the pass registry is loaded (``tessera.opt`` checks it in its worker), and a
name that is none is refused there with the flag as given. A flag that would change nothing (an
IR-printing filter with no printing, a bytecode version without bytecode) is refused too, so
that no option is ever accepted and then ignored.

This module imports no MLIR: the supervisor parses the command line before it forks a worker.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import TesseraError

DEFAULT_SPLIT_MARKER = "// -----"

# A pass's command-line name as MLIR registers them (`canonicalize`, `func.func`-free names with
# dashes, dots or underscores); anything else after a dash is no pass and no option.
_PASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_TRUE = ("", "true", "TRUE", "True", "1")  # LLVM's parser<bool>: a bare `-flag=` is true
_FALSE = ("false", "FALSE", "False", "0")


class UsageError(TesseraError):
    """A command line tessera-opt cannot run; ``str()`` is the whole message, one line."""


@dataclass(frozen=True)
class PassFlag:
    """A ``-<pass>[=<options>]`` flag; ``spelling`` is the argument as given, for messages."""

    name: str
    options: str
    spelling: str

    def element(self) -> str:
        """The flag as a pipeline element: ``name`` or ``name{options}``."""
        return f"{self.name}{{{self.options}}}" if self.options else self.name


@dataclass
class Options:
    """What a command line asks for; the defaults are mlir-opt's."""

    input: str = "-"
    output: str = "-"
    pass_pipeline: str | None = None
    pass_flags: list[PassFlag] = field(default_factory=list)
    split_marker: str | None = None  # None: the input is one chunk
    output_split_marker: str = DEFAULT_SPLIT_MARKER
    verify_diagnostics: str | None = None  # "all" or "only-expected"
    verify_each: bool = True
    allow_unregistered_dialect: bool = True
    print_ir_before_all: bool = False
    print_ir_after_all: bool = False
    print_ir_after_change: bool = False
    print_ir_after_failure: bool = False
    print_ir_module_scope: bool = False
    print_ir_tree_dir: str | None = None
    print_op_generic: bool = False
    print_debuginfo: bool = False
    elide_elements_if_larger: int | None = None
    disable_threading: bool = False
    timing: bool = False
    timing_display: str = "tree"
    pass_statistics: bool = False
    pass_statistics_display: str = "pipeline"
    emit_bytecode: bool = False
    emit_bytecode_version: int | None = None
    dump_pass_pipeline: bool = False
    list_passes: bool = False
    version: bool = False
    help: bool = False

    @property
    def prints_ir(self) -> bool:
        """Whether IR dumps are on (the flags that choose passes to print after or before)."""
        return self.print_ir_before_all or self.print_ir_after_all or self.print_ir_after_failure


Convert = Callable[[str, str], object]  # (flag as given, text after '=') -> value


@dataclass(frozen=True)
class _Option:
    """One option. ``kind``: "flag" (a boolean: bare, or ``=true``/``=false``), "value" (needs
    a value, after ``=`` or as the next argument) or "optional" (a value after ``=`` only; bare,
    ``implicit``). ``negate`` stores the flag's opposite (``--no-verify-each``)."""

    names: tuple[str, ...]
    kind: str
    dest: str
    help: str
    metavar: str = ""
    convert: Convert | None = None
    implicit: object = None
    negate: bool = False


def _boolean(flag: str, raw: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise UsageError(f"{flag}: expected true or false, found '{raw}'")


def _count(flag: str, raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise UsageError(f"{flag}: expected a number, found '{raw}'") from None
    if value < 0:
        raise UsageError(f"{flag}: expected a number of at least 0, found '{raw}'")
    return value


def _choice(*choices: str, refused: dict[str, str] | None = None) -> Callable[[str, str], str]:
    def convert(flag: str, raw: str) -> str:
        if refused and raw in refused:
            raise UsageError(f"{flag}: {refused[raw]}")
        if raw not in choices:
            raise UsageError(f"{flag}: expected one of {', '.join(choices)}, found '{raw}'")
        return raw

    return convert


def _marker(flag: str, raw: str) -> str:
    # `--split-input-file=` with nothing after it means the default marker, as in mlir-opt.
    return raw or DEFAULT_SPLIT_MARKER


def _verify_level(flag: str, raw: str) -> str:
    return _choice("all", "only-expected")(flag, raw or "all")


def _always_unregistered(flag: str, raw: str) -> bool:
    if not _boolean(flag, raw):
        raise UsageError(
            f"{flag}: tessera-opt always allows unregistered dialects (tessera's own ops are "
            "unregistered in MLIR), so they cannot be refused"
        )
    return True


_OPTIONS = (
    _Option(("o",), "value", "output", "output file ('-' for stdout)", "<filename>"),
    _Option(
        ("pass-pipeline", "p"),
        "value",
        "pass_pipeline",
        "a textual pipeline, e.g. 'builtin.module(canonicalize,tessera-fuse)'",
        "<pipeline>",
    ),
    _Option(
        ("split-input-file",),
        "optional",
        "split_marker",
        f"process each chunk between marker lines on its own (default '{DEFAULT_SPLIT_MARKER}')",
        "[=<marker>]",
        _marker,
        DEFAULT_SPLIT_MARKER,
    ),
    _Option(
        ("output-split-marker",),
        "value",
        "output_split_marker",
        f"the line printed between the chunks' outputs (default '{DEFAULT_SPLIT_MARKER}')",
        "<marker>",
    ),
    _Option(
        ("verify-diagnostics",),
        "optional",
        "verify_diagnostics",
        "check diagnostics against '// expected-error' comments; =only-expected lets "
        "diagnostics nothing expects pass",
        "[=all|only-expected]",
        _verify_level,
        "all",
    ),
    _Option(
        ("verify-each",),
        "flag",
        "verify_each",
        "verify the IR after each pass, MLIR's verifier and tessera's (default true)",
        "[=true|false]",
    ),
    _Option(("no-verify-each",), "flag", "verify_each", "same as --verify-each=false", negate=True),
    _Option(
        ("allow-unregistered-dialect",),
        "flag",
        "allow_unregistered_dialect",
        "accepted as in mlir-opt; always on (tessera's ops are unregistered in MLIR)",
        convert=_always_unregistered,
    ),
    _Option(
        ("mlir-print-ir-before-all",),
        "flag",
        "print_ir_before_all",
        "print the IR before every pass to stderr",
    ),
    _Option(
        ("mlir-print-ir-after-all",),
        "flag",
        "print_ir_after_all",
        "print the IR after every pass to stderr",
    ),
    _Option(
        ("mlir-print-ir-after-change",),
        "flag",
        "print_ir_after_change",
        "with -after-all or -after-failure: print only after passes that changed the IR",
    ),
    _Option(
        ("mlir-print-ir-after-failure",),
        "flag",
        "print_ir_after_failure",
        "print the IR after a pass that failed",
    ),
    _Option(
        ("mlir-print-ir-module-scope",),
        "flag",
        "print_ir_module_scope",
        "IR dumps show the whole module (needs --mlir-disable-threading)",
    ),
    _Option(
        ("mlir-print-ir-tree-dir",),
        "value",
        "print_ir_tree_dir",
        "write IR dumps as files in a tree under this folder instead of stderr",
        "<dir>",
    ),
    _Option(
        ("mlir-print-op-generic",),
        "flag",
        "print_op_generic",
        "print ops in the generic form (output and IR dumps)",
    ),
    _Option(
        ("mlir-print-debuginfo",),
        "flag",
        "print_debuginfo",
        "print locations (output and IR dumps)",
    ),
    _Option(
        ("mlir-elide-elementsattrs-if-larger",),
        "value",
        "elide_elements_if_larger",
        "elide elements attributes with more elements than this (output and IR dumps)",
        "<n>",
        _count,
    ),
    _Option(
        ("mlir-disable-threading",),
        "flag",
        "disable_threading",
        "run MLIR single-threaded",
    ),
    _Option(
        ("mlir-timing",),
        "flag",
        "timing",
        "print the time each pass took to stderr, per chunk",
    ),
    _Option(
        ("mlir-timing-display",),
        "value",
        "timing_display",
        "tree (the one view the MLIR Python bindings print)",
        "<tree>",
        _choice(
            "tree",
            refused={
                "list": "the MLIR Python bindings' pass timing prints the tree view only "
                "(--mlir-timing-display=tree)"
            },
        ),
    ),
    _Option(
        ("mlir-pass-statistics",),
        "flag",
        "pass_statistics",
        "print the passes' statistics to stderr, per chunk",
    ),
    _Option(
        ("mlir-pass-statistics-display",),
        "value",
        "pass_statistics_display",
        "how statistics are shown: list or pipeline (default)",
        "<list|pipeline>",
        _choice("list", "pipeline"),
    ),
    _Option(
        ("emit-bytecode",),
        "flag",
        "emit_bytecode",
        "write MLIR bytecode instead of text",
    ),
    _Option(
        ("emit-bytecode-version",),
        "value",
        "emit_bytecode_version",
        "the bytecode version to write (with --emit-bytecode)",
        "<n>",
        _count,
    ),
    _Option(
        ("dump-pass-pipeline",),
        "flag",
        "dump_pass_pipeline",
        "print the pipeline that will run to stderr, per chunk",
    ),
    _Option(
        ("list-passes",),
        "flag",
        "list_passes",
        "list tessera's passes and pipelines, then exit",
    ),
    _Option(("version",), "flag", "version", "print the versions, then exit"),
    _Option(("help", "h"), "flag", "help", "print this help, then exit"),
)
_BY_NAME = {name: option for option in _OPTIONS for name in option.names}

# mlir-opt options that tessera-opt cannot honour, and why: refused by name, never taken for a
# pass that does not exist.
_UNSUPPORTED = {
    "mlir-print-ir-before": "the MLIR Python bindings print the IR before every pass or none "
    "(--mlir-print-ir-before-all)",
    "mlir-print-ir-after": "the MLIR Python bindings print the IR after every pass or none "
    "(--mlir-print-ir-after-all, --mlir-print-ir-after-change)",
    "mlir-output-format": "the MLIR Python bindings print timing as text only",
    "no-implicit-module": "tessera-opt always wraps top-level ops in a module",
    "show-dialects": "the MLIR Python bindings cannot list the registered dialects",
    "load-pass-plugin": "tessera-opt loads no plugins",
    "load-dialect-plugin": "tessera-opt loads no plugins",
}


def parse_args(argv: Sequence[str]) -> Options:
    """The options of a command line; raises ``UsageError`` naming the first bad argument."""
    options = Options()
    given: dict[str, str] = {}  # dest -> the argument that set it
    inputs: list[str] = []
    index = 0
    only_inputs = False
    while index < len(argv):
        arg = argv[index]
        index += 1
        if only_inputs or arg == "-" or not arg.startswith("-"):
            inputs.append(arg)
            continue
        if arg == "--":  # as in LLVM: everything after is an input
            only_inputs = True
            continue
        name, equals, raw = (arg[2:] if arg.startswith("--") else arg[1:]).partition("=")
        option = _BY_NAME.get(name)
        if option is None:
            if name in _UNSUPPORTED:
                raise UsageError(f"{arg}: not supported: {_UNSUPPORTED[name]}")
            if not _PASS_NAME.fullmatch(name):
                raise UsageError(unknown_option(arg))
            options.pass_flags.append(PassFlag(name, raw.strip(), arg))
            continue
        if option.dest in given:
            first = given[option.dest]
            if _BY_NAME.get(first.lstrip("-").partition("=")[0]) is option:
                raise UsageError(f"{arg}: given twice (first as {first})")
            raise UsageError(f"{arg}: already set by {first}")
        given[option.dest] = arg
        if option.kind == "value" and not equals:
            if index == len(argv):
                raise UsageError(f"{arg}: needs a value {option.metavar}".rstrip())
            raw = argv[index]
            index += 1
        value: object
        if option.kind == "optional" and not equals:
            value = option.implicit
        elif option.convert is not None:
            value = option.convert(arg, raw)
        elif option.kind == "flag":
            value = _boolean(arg, raw) if equals else True
        else:
            value = raw
        if option.negate:
            value = not value
        setattr(options, option.dest, value)
    if len(inputs) > 1:
        raise UsageError(f"{inputs[1]}: a second input file (the input is {inputs[0]})")
    if inputs:
        options.input = inputs[0]
    _check_combinations(options, given)
    return options


def _check_combinations(options: Options, given: dict[str, str]) -> None:
    """Refuses options that would change nothing given the others (mlir-opt takes them and
    does nothing), and pairs that cannot go together."""
    if options.pass_pipeline is not None and options.pass_flags:
        raise UsageError(
            f"give passes either with {given['pass_pipeline']} or as pass flags, not both "
            f"({options.pass_flags[0].spelling})"
        )
    printing = (
        "--mlir-print-ir-before-all, --mlir-print-ir-after-all or --mlir-print-ir-after-failure"
    )
    if options.print_ir_after_change and not (
        options.print_ir_after_all or options.print_ir_after_failure
    ):
        raise UsageError(
            f"{given['print_ir_after_change']}: only filters the dumps of "
            "--mlir-print-ir-after-all or --mlir-print-ir-after-failure; give one of them"
        )
    for dest in ("print_ir_module_scope", "print_ir_tree_dir"):
        if dest in given and not options.prints_ir:
            raise UsageError(f"{given[dest]}: only applies to IR dumps; give {printing}")
    if options.print_ir_module_scope and not options.disable_threading:
        raise UsageError(
            f"{given['print_ir_module_scope']}: needs --mlir-disable-threading (MLIR cannot "
            "print the module while passes run on several threads)"
        )
    if options.emit_bytecode_version is not None and not options.emit_bytecode:
        raise UsageError(f"{given['emit_bytecode_version']}: needs --emit-bytecode")
    for dest in ("print_op_generic", "print_debuginfo", "elide_elements_if_larger"):
        if dest in given and options.emit_bytecode and not options.prints_ir:
            raise UsageError(
                f"{given[dest]}: changes printed IR, and with --emit-bytecode none is printed"
            )
    for dest, needs, flag in (
        ("timing_display", options.timing, "--mlir-timing"),
        ("pass_statistics_display", options.pass_statistics, "--mlir-pass-statistics"),
        ("output_split_marker", options.split_marker is not None, "--split-input-file"),
    ):
        if dest in given and not needs:
            raise UsageError(f"{given[dest]}: only applies with {flag}")


def option_spellings() -> list[str]:
    """Every option as ``--help`` shows it: ``-o``, ``--pass-pipeline``, ``-p``, ..."""
    return [_spelled(name) for option in _OPTIONS for name in option.names]


def _spelled(name: str) -> str:
    return ("-" if len(name) == 1 else "--") + name


def unknown_option(arg: str, known: Sequence[str] = ()) -> str:
    """The message for an argument that is no option of tessera-opt (nor, once ``known`` lists
    the tessera passes, a pass), with the nearest option or pass when one is close."""
    name = arg.lstrip("-").partition("=")[0]
    words = [*_BY_NAME, *known]
    close = difflib.get_close_matches(name, words, n=1, cutoff=0.75)
    hint = f"; did you mean '--{close[0]}'?" if close else " (see --help)"
    return f"unknown option '{arg}': not an option of tessera-opt nor a registered pass{hint}"


def help_text() -> str:
    """``--help``: the options, one line each."""
    rows = [("<input file>", "the IR to read, text or bytecode ('-' or none: stdin)")]
    for option in _OPTIONS:
        spelled = ", ".join(_spelled(name) for name in option.names)
        if option.metavar:
            spelled += option.metavar if option.metavar.startswith("[") else f" {option.metavar}"
        rows.append((spelled, option.help))
    rows.append(
        (
            "--<pass>[=<options>]",
            "add a pass or pipeline, tessera's or upstream MLIR's, in order "
            "(--tessera-schedule-async-copies=stages=3, --canonicalize='max-iterations=2')",
        )
    )
    width = max(len(spelled) for spelled, _ in rows) + 2
    lines = [
        "OVERVIEW: tessera-opt runs tessera and upstream MLIR passes on IR, following mlir-opt",
        "",
        "USAGE: tessera-opt [options] <input file>",
        "",
        "OPTIONS (one dash or two, the same option; values after '=' or as the next argument):",
    ]
    lines += [f"  {spelled:{width}}{text}" for spelled, text in rows]
    return "\n".join(lines)


def version_text() -> str:
    """``--version``: tessera's version and that of the MLIR bindings it runs on."""
    lines = [f"tessera-opt (Tessera {_version('tessera')})"]
    for distribution in sorted(importlib.metadata.packages_distributions().get("mlir", [])):
        lines.append(f"  MLIR Python bindings: {distribution} {_version(distribution)}")
    return "\n".join(lines)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed as a package)"
