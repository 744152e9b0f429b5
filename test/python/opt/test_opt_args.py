"""tessera-opt's command line follows mlir-opt's: one dash or two for every option, values after
'=' or as the next argument, no prefix matching and no short option with a glued value, pass
flags in order, and every argument it cannot honour refused with exit status 2 and one line
that names it.

The parser is tested directly (``parse_args``); what only a whole run shows (exit statuses,
what reaches stderr, unknown pass names, the verifier between passes) runs the tool."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_opt_support import tessera_opt

from tessera.opt_args import (
    Options,
    PassFlag,
    UsageError,
    help_text,
    option_spellings,
    parse_args,
)

ROOT = Path(__file__).resolve().parents[3]
# Two identical tessera ops: `cse` (with the tessera-cse that follows it) leaves one.
_NORM = (
    '"tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32}'
    " : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>"
)
TWO_NORMS = f"""func.func @norms(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {{
  %0 = {_NORM}
  %1 = {_NORM}
  %2 = arith.addf %0, %1 : tensor<2x8xf32>
  return %2 : tensor<2x8xf32>
}}
"""
# tessera-opt with one more pass, which erases every func.return (blocks lose their
# terminator, which MLIR's verifier reports).
BREAKING_DRIVER = textwrap.dedent(
    """
    import sys
    from tessera.ir_walk import walk_ops
    from tessera.pass_registry import register_pass

    @register_pass("test-drop-returns")
    def drop_returns(module, options):
        '''Erases every func.return.'''
        for op in walk_ops(module):
            if op.name == "func.return":
                op.erase()

    from tessera.opt import main
    sys.argv = ["tessera-opt", *sys.argv[1:]]
    main()
    """
)


def run_in(folder: Path, *args: str, driver: str | None = None) -> subprocess.CompletedProcess[str]:
    """tessera-opt run in ``folder`` (so that a file a flag would write lands there)."""
    head = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "tessera.opt"]
    return subprocess.run(
        [*head, *args], cwd=folder, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def norms(tmp_path: Path) -> Path:
    path = tmp_path / "norms.mlir"
    path.write_text(TWO_NORMS)
    return path


# ------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize(
    "argv",
    [
        ["-pass-pipeline=builtin.module(cse)"],
        ["--pass-pipeline=builtin.module(cse)"],
        ["-pass-pipeline", "builtin.module(cse)"],
        ["--pass-pipeline", "builtin.module(cse)"],
        ["-p", "builtin.module(cse)"],
        ["-p=builtin.module(cse)"],
        ["--p", "builtin.module(cse)"],
    ],
)
def test_every_spelling_of_the_pass_pipeline_sets_it(argv: list[str]) -> None:
    options = parse_args(["in.mlir", *argv])
    assert options.pass_pipeline == "builtin.module(cse)"
    assert options.pass_flags == [] and options.input == "in.mlir"


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["-split-input-file"], "split_marker", "// -----"),
        (["--split-input-file"], "split_marker", "// -----"),
        (["-split-input-file="], "split_marker", "// -----"),
        (["-split-input-file=// ==="], "split_marker", "// ==="),
        (["-verify-diagnostics"], "verify_diagnostics", "all"),
        (["--verify-diagnostics=only-expected"], "verify_diagnostics", "only-expected"),
        (["-verify-each=false"], "verify_each", False),
        (["-verify-each=0"], "verify_each", False),
        (["--verify-each=True"], "verify_each", True),
        (["-verify-each="], "verify_each", True),  # LLVM: an empty value is true
        (["--no-verify-each"], "verify_each", False),
        (["-o", "out.mlir"], "output", "out.mlir"),
        (["-o=out.mlir"], "output", "out.mlir"),
        (["--o", "-"], "output", "-"),
        (["-mlir-print-ir-before-all"], "print_ir_before_all", True),
        (["--mlir-print-ir-after-all=false"], "print_ir_after_all", False),
        (["-mlir-timing"], "timing", True),
        (["-mlir-print-op-generic"], "print_op_generic", True),
        (["-mlir-elide-elementsattrs-if-larger", "16"], "elide_elements_if_larger", 16),
        (["-emit-bytecode"], "emit_bytecode", True),
        (["-dump-pass-pipeline"], "dump_pass_pipeline", True),
        (["-version"], "version", True),
        (["-h"], "help", True),
    ],
)
def test_options_take_one_dash_or_two_and_their_values(
    argv: list[str], field: str, value: object
) -> None:
    assert getattr(parse_args(argv), field) == value


def test_an_option_needing_a_value_takes_the_next_argument_whatever_it_looks_like() -> None:
    options = parse_args(["-o", "-split-input-file", "in.mlir"])
    assert options.output == "-split-input-file" and options.split_marker is None


def test_an_optional_value_follows_equals_only() -> None:
    # The next word is the input, not the marker, as in LLVM (cl::ValueOptional).
    options = parse_args(["-split-input-file", "in.mlir"])
    assert (options.split_marker, options.input) == ("// -----", "in.mlir")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["-pfoo"], PassFlag("pfoo", "", "-pfoo")),
        (["-ofile.mlir"], PassFlag("ofile.mlir", "", "-ofile.mlir")),
        (["--split"], PassFlag("split", "", "--split")),
        (["-verify-diag"], PassFlag("verify-diag", "", "-verify-diag")),
        (["-pass-pipelin=x"], PassFlag("pass-pipelin", "x", "-pass-pipelin=x")),
    ],
)
def test_no_option_is_matched_by_prefix_or_with_a_glued_value(
    argv: list[str], flag: PassFlag
) -> None:
    """Such words can only be pass names (refused once the registry says they are none), never
    an option: the options keep their defaults."""
    options = parse_args(argv)
    assert options.pass_flags == [flag]
    assert options == Options(pass_flags=[flag])


def test_pass_flags_keep_their_order_and_options() -> None:
    options = parse_args(
        ["-canonicalize=max-iterations=2 top-down=false", "--cse", "-tessera-fuse", "--cse="]
    )
    assert [f.element() for f in options.pass_flags] == [
        "canonicalize{max-iterations=2 top-down=false}",
        "cse",
        "tessera-fuse",
        "cse",
    ]


def test_double_dash_ends_the_options() -> None:
    options = parse_args(["--", "-weird.mlir"])
    assert options.input == "-weird.mlir" and options.pass_flags == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a.mlir", "b.mlir"], "b.mlir: a second input file (the input is a.mlir)"),
        (["-o"], "-o: needs a value <filename>"),
        (["-p"], "-p: needs a value <pipeline>"),
        (["-o", "a", "-o=b"], "-o=b: given twice (first as -o)"),
        (["-verify-each", "--no-verify-each"], "--no-verify-each: already set by -verify-each"),
        (["-verify-each=maybe"], "-verify-each=maybe: expected true or false, found 'maybe'"),
        (["-verify-diagnostics=some"], "expected one of all, only-expected, found 'some'"),
        (["---x"], "unknown option '---x'"),
        (["-p(cse)"], "unknown option '-p(cse)'"),
        (["-p", "builtin.module(cse)", "-cse"], "not both (-cse)"),
        (["-allow-unregistered-dialect=false"], "always allows unregistered dialects"),
        (["-mlir-print-ir-after=cse"], "not supported: the MLIR Python bindings print the IR"),
        (["-mlir-print-ir-before=cse"], "not supported"),
        (["-show-dialects"], "not supported"),
        (["-mlir-timing", "-mlir-timing-display=list"], "prints the tree view only"),
        (["-mlir-timing-display=tree"], "only applies with --mlir-timing"),
        (["-mlir-pass-statistics-display=list"], "only applies with --mlir-pass-statistics"),
        (["-output-split-marker=x"], "only applies with --split-input-file"),
        (["-mlir-print-ir-after-change"], "only filters the dumps of"),
        (["-mlir-print-ir-before-all", "-mlir-print-ir-after-change"], "only filters"),
        (["-mlir-print-ir-module-scope", "-mlir-disable-threading"], "only applies to IR dumps"),
        (["-mlir-print-ir-after-all", "-mlir-print-ir-module-scope"], "needs --mlir-disable"),
        (["-mlir-print-ir-tree-dir=t"], "only applies to IR dumps"),
        (["-emit-bytecode-version=1"], "needs --emit-bytecode"),
        (["-emit-bytecode-version=one", "-emit-bytecode"], "expected a number, found 'one'"),
        (["-emit-bytecode", "-mlir-print-debuginfo"], "with --emit-bytecode none is printed"),
        (["-mlir-elide-elementsattrs-if-larger=-2"], "expected a number of at least 0"),
    ],
)
def test_bad_command_lines_are_refused_with_the_argument_named(
    argv: list[str], message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        parse_args(argv)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_combinations_refused_alone_are_taken_together() -> None:
    """The refusals above are about the missing partner, not the option itself."""
    options = parse_args(
        [
            "-mlir-print-ir-after-all",
            "-mlir-print-ir-after-change",
            "-mlir-print-ir-module-scope",
            "-mlir-disable-threading",
            "-mlir-print-ir-tree-dir=t",
            "-emit-bytecode",
            "-emit-bytecode-version=1",
            "-mlir-print-debuginfo",
            "-mlir-timing",
            "-mlir-timing-display=tree",
            "-split-input-file",
            "-output-split-marker=x",
        ]
    )
    assert options.print_ir_module_scope and options.emit_bytecode_version == 1


def test_every_option_is_in_the_help_and_in_the_docs() -> None:
    docs = (ROOT / "docs" / "architecture.md").read_text()
    section = docs.split("\n## tessera-opt\n", 1)[1].split("\n## ", 1)[0]
    shown = help_text()
    spellings = option_spellings()
    assert {"-o", "--pass-pipeline", "-p", "--mlir-timing", "--emit-bytecode"} <= set(spellings)
    for spelled in spellings:
        assert re.search(rf"{re.escape(spelled)}(?![\w-])", shown), spelled
        assert re.search(rf"(?<![\w-]){re.escape(spelled)}(?![\w-])", section), spelled


# --------------------------------------------------------------------------- whole runs


@pytest.mark.parametrize(
    "flag",
    [
        "--bogus",
        "-pfoo",
        "-ofoo.mlir",
        "--split",
        "-pass-pipelin=builtin.module(cse)",
        "-canonicalise",
        "--tessera-fuse-everything",
        "--mlir-print-ir-before=cse",
        "---x",
        "-verify-each=maybe",
    ],
)
def test_an_argument_tessera_opt_cannot_honour_exits_2_with_one_line_naming_it(
    norms: Path, flag: str
) -> None:
    done = run_in(norms.parent, str(norms), flag)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera-opt: error: "), done.stderr
    assert flag in lines[0]
    assert sorted(p.name for p in norms.parent.iterdir()) == ["norms.mlir"]  # wrote nothing


def test_single_dash_pass_pipeline_runs_the_pipeline(norms: Path) -> None:
    untouched = tessera_opt(norms)
    single = tessera_opt(norms, "-pass-pipeline=builtin.module(cse)")
    double = tessera_opt(norms, "--pass-pipeline", "builtin.module(cse)")
    flag = tessera_opt(norms, "-cse")
    assert (untouched.returncode, single.returncode, double.returncode) == (0, 0, 0)
    assert untouched.stdout.count('"tessera.norm.rms"') == 2
    assert single.stdout.count('"tessera.norm.rms"') == 1
    assert single.stdout == double.stdout == flag.stdout
    assert single.stderr == ""


def test_problems_in_the_input_or_pipeline_exit_1(tmp_path: Path) -> None:
    source = tmp_path / "broken.mlir"
    source.write_text("func.func @f( {\n")
    assert tessera_opt(source).returncode == 1
    assert tessera_opt(source, "-p", "builtin.module(no-such-pass)").returncode == 1
    assert tessera_opt(source, "-canonicalize=no-such-option=1").returncode == 1


@pytest.mark.parametrize("flag", ["--help", "-h", "-version", "--list-passes"])
def test_help_version_and_list_passes_exit_0_without_reading_input(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tessera.opt", flag],
        input=TWO_NORMS,  # a run that read it would print it back
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert "tessera" in done.stdout and "func.func" not in done.stdout


@pytest.mark.parametrize("disabled", [[], ["-verify-each=false"], ["--no-verify-each"]])
def test_verify_each_decides_whether_broken_ir_between_passes_is_an_error(
    tmp_path: Path, disabled: list[str]
) -> None:
    source = tmp_path / "f.mlir"
    source.write_text("func.func @f() {\n  return\n}\n")
    done = run_in(tmp_path, str(source), "-test-drop-returns", *disabled, driver=BREAKING_DRIVER)
    if disabled:
        assert done.returncode == 0, done.stderr
        assert '"func.func"' in done.stdout and "return" not in done.stdout
    else:
        assert done.returncode == 1
        assert f"{source}:1:1: error: empty block: expect at least a terminator" in done.stderr


def test_only_expected_still_fails_when_an_expected_diagnostic_does_not_come(
    tmp_path: Path,
) -> None:
    source = tmp_path / "expects.mlir"
    source.write_text("func.func @f() {\n  // expected-error@+1 {{never said}}\n  return\n}\n")
    done = tessera_opt(source, "-verify-diagnostics=only-expected")
    assert done.returncode == 1
    assert f'{source}:2:6: error: expected error "never said" was not produced' in done.stderr
