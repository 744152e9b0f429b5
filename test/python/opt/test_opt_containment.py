"""tessera-opt survives crashes inside MLIR: a worker that dies on a chunk becomes one located
error on that chunk, and the other chunks are still processed and printed.

The crashes are real ones: the pre-parse checks (which keep the known crash classes from ever
reaching the parser) are switched off in a driver script, so the parser aborts on its
assertion or overflows its stack; a pass calls os.abort() for a crash while passes run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_opt_support import tessera_opt_unchecked

GOOD = """func.func @{name}() {{
  return
}}
"""
# linalg.broadcast's parser aborts on a float in `dimensions` ("attributes may never be null").
ABORTS_PARSER = """func.func @bad(%x: tensor<8xf32>, %o: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %0 = linalg.broadcast ins(%x : tensor<8xf32>) outs(%o : tensor<2x8xf32>) dimensions = [0.5]
  return %0 : tensor<2x8xf32>
}
"""


def tessera_opt(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "input.mlir"
    source.write_text(text)
    return tessera_opt_unchecked(source, *args)


def chunks(*texts: str) -> str:
    return "// -----\n".join(texts)


def test_parser_abort_is_a_located_error_and_later_chunks_still_run(tmp_path: Path) -> None:
    text = chunks(
        GOOD.format(name="before"), "// a comment\n" + ABORTS_PARSER, GOOD.format(name="after")
    )
    done = tessera_opt(tmp_path, text, "--split-input-file")
    assert done.returncode == 1, done.stderr
    # The bad chunk starts after line 4's marker; its IR after the comment, on line 6.
    assert done.stderr.strip() == (
        f"{tmp_path / 'input.mlir'}:6:1: error: the IR could not be parsed (the parser crashed: "
        'assertion `value && "attributes may never be null"\' failed at '
        "mlir/lib/IR/OperationSupport.cpp:128)"
    )
    assert "func.func @before" in done.stdout
    assert "func.func @after" in done.stdout
    assert "Traceback" not in done.stderr


def test_parser_stack_overflow_is_a_located_error(tmp_path: Path) -> None:
    depth = 20000  # far past the ~4,500 levels of regions the parser's stack holds
    nested = '"test.nest"() ({\n' * depth + "}) : () -> ()\n" * depth
    done = tessera_opt(tmp_path, "func.func @deep() {\n" + nested + "  return\n}\n")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"{tmp_path / 'input.mlir'}:1:1: error: the IR could not be parsed "
        "(the parser crashed: SIGSEGV (Segmentation fault))"
    )


def test_crash_in_a_pass_names_the_pipeline_and_keeps_earlier_output(tmp_path: Path) -> None:
    text = chunks(GOOD.format(name="first"), GOOD.format(name="second"))
    done = tessera_opt(tmp_path, text, "--split-input-file", "--canonicalize", "--test-abort")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    where = tmp_path / "input.mlir"
    assert lines == [
        f"{where}:1:1: error: the pass pipeline crashed on this IR (SIGABRT (Aborted))",
        f"{where}:5:1: error: the pass pipeline crashed on this IR (SIGABRT (Aborted))",
    ]
    assert done.stdout == ""


def test_ir_printed_before_a_crash_comes_first(tmp_path: Path) -> None:
    done = tessera_opt(
        tmp_path,
        GOOD.format(name="f"),
        "--canonicalize",
        "--test-abort",
        "--mlir-print-ir-after-all",
    )
    assert done.returncode == 1
    dump = done.stderr.index("IR Dump After Canonicalizer")
    crash = done.stderr.index("error: the pass pipeline crashed")
    assert dump < crash


@pytest.mark.parametrize("flag", ["--verify-diagnostics", "-verify-diagnostics=only-expected", ""])
def test_a_crash_is_never_an_expected_diagnostic(tmp_path: Path, flag: str) -> None:
    text = ABORTS_PARSER.replace("  %0", "  // expected-error@+1 {{dimensions}}\n  %0")
    done = tessera_opt(tmp_path, text, *([flag] if flag else []))
    assert done.returncode == 1
    assert "the parser crashed" in done.stderr
