"""The pre-parse checks (``tessera.context.check_text``) refuse exactly the inputs on which
MLIR's parser crashes: each case here is also handed to the real parser, with the checks off,
and the checks must refuse it if and only if the parser dies on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_opt_support import tessera_opt_unchecked

from tessera.context import MAX_NESTING, check_text
from tessera.errors import ParseError

# Contents of an integer list, well-formed or not, in each of the syntaxes that parse one with
# the assertion-prone parser of linalg.broadcast/reduce/transpose.
LISTS = (
    "0", "", "0.5", "1,", ",", "0 1", "- 1", "-0", "00", "-", "+1", "1.0", "1e3", "0x", "0x10",
    "true, false", "-true", '"0"', "x", "[0]", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "0x7FFFFFFFFFFFFFFF",
    "0x8000000000000000", "-0x8000000000000000", "0xFFFFFFFFFFFFFFFF", "1 // c\n, 0", "-\n1",
    "\x0b0", "\x000",
)  # fmt: skip
# Indices around the 32- and 64-bit edges.
INDICES = (
    "0", "1", "5", "-1", "-2", "2147483647", "2147483648", "4294967294", "4294967295",
    "4294967296", "8589934591", "9223372036854775807", "-9223372036854775808", "0xFFFFFFFF",
    "- 1",
)  # fmt: skip
CASES = {
    "broadcast dimensions": (
        "func.func @f(%x: tensor<8xf32>, %o: tensor<2x8xf32>) {{\n"
        "  %0 = linalg.broadcast ins(%x : tensor<8xf32>) outs(%o : tensor<2x8xf32>)"
        " dimensions = [{}]\n  return\n}}\n",
        LISTS,
    ),
    "transpose permutation": (
        "func.func @f(%x: tensor<8x2xf32>, %o: tensor<2x8xf32>) {{\n"
        "  %0 = linalg.transpose ins(%x : tensor<8x2xf32>) outs(%o : tensor<2x8xf32>)"
        " permutation = [{}]\n  return\n}}\n",
        LISTS,
    ),
    "reduce dimensions without operands": (
        "func.func @f() {{\n  %0 = linalg.reduce dimensions = [{}]\n  return\n}}\n",
        LISTS,
    ),
    "broadcast dimensions without brackets": (
        "func.func @f() {{\n  %0 = linalg.broadcast {{a}} dimensions = {}\n  return\n}}\n",
        LISTS,
    ),
    "collapse_shape reassociation": (
        "func.func @f(%x: tensor<?x4x?x16xf32>) {{\n  %0 = tensor.collapse_shape %x"
        " [[{}, 1], [2], [3]] : tensor<?x4x?x16xf32> into tensor<?x?x16xf32>\n  return\n}}\n",
        INDICES,
    ),
    "expand_shape reassociation, generic syntax": (
        'func.func @f(%x: tensor<?x16xf32>, %n: index) {{\n  %0 = "tensor.expand_shape"(%x, %n)'
        " <{{reassociation = [[0], [1, {}]], static_output_shape = array<i64:"
        " -9223372036854775808, 2, 8>}}> : (tensor<?x16xf32>, index) -> tensor<?x2x8xf32>\n"
        "  return\n}}\n",
        INDICES,
    ),
    "concat dim": (
        "func.func @f(%a: tensor<2x3xf32>) {{\n  %0 = tensor.concat dim({}) %a, %a :"
        " (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>\n  return\n}}\n",
        INDICES,
    ),
    "concat dim, generic syntax": (
        'func.func @f(%a: tensor<2x3xf32>) {{\n  %0 = "tensor.concat"(%a, %a) <{{dim = {} : i64}}>'
        " : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>\n  return\n}}\n",
        INDICES,
    ),
    "dense array element type": (
        "func.func @f() attributes {{a = array<{}: 1>}} {{\n  return\n}}\n",
        ("i8", "i64", "f32", "index", "none", "complex<f32>", "i2"),
    ),
    "dense constant of many elements": (
        "func.func @f() {{\n  %0 = arith.constant dense<0.0> : tensor<{}x16xf32>\n  return\n}}\n",
        ("1", "576460752303423487", "576460752303423488", "9223372036854775807", "?"),
    ),
}


def refused(text: str) -> bool:
    try:
        check_text(text, "input.mlir")
    except ParseError:
        return True
    return False


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_exactly_where_the_parser_crashes(case: str, tmp_path: Path) -> None:
    template, values = CASES[case]
    texts = [template.format(value) for value in values]
    source = tmp_path / "input.mlir"
    # One run, one chunk per value: each chunk the parser crashes on gets its own error.
    source.write_text("// -----\n".join(texts))
    done = tessera_opt_unchecked(source, "--split-input-file")
    crashed_lines = {
        int(line.split(":")[1]) for line in done.stderr.splitlines() if "parser crashed" in line
    }
    assert crashed_lines, "no value crashed the parser: the check would have nothing to do"
    first_line, disagreements = 1, []
    for value, text in zip(values, texts, strict=True):
        crashed = first_line in crashed_lines
        if refused(text) != crashed:
            disagreements.append(f"{value!r}: parser {'crashes' if crashed else 'copes'}")
        first_line += text.count("\n") + 1
    assert not disagreements, disagreements


@pytest.mark.parametrize(
    "text",
    [
        "{a = 1, dimensions = 0.5}",  # an attribute dictionary entry: the safe parser
        '"linalg.broadcast"() <{dimensions = 0.5}> : () -> ()',
        "%dimensions = foo",
        '"x.y"() {s = "outs(%a) dimensions = 0.5"} : () -> ()',
        "outs(%a) // dimensions = 0.5\n",
    ],
)
def test_integer_list_check_leaves_other_uses_of_the_words_alone(text: str) -> None:
    assert not refused(text)


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return f"func.func @f() attributes {{a = {opener * depth}1{closer * depth}}} {{\n  return\n}}\n"


def test_nesting_limit_is_exact() -> None:
    # The attribute dictionary's brace is one level.
    assert not refused(nested(MAX_NESTING - 1))
    with pytest.raises(ParseError) as found:
        check_text(nested(MAX_NESTING), "input.mlir")
    column = len("func.func @f() attributes {a = ") + MAX_NESTING
    assert str(found.value.location) == f"input.mlir:1:{column}"


@pytest.mark.parametrize(
    "filler",
    [
        "(tensor<4xf32>) -> (f32)",  # the '>' of an arrow closes nothing
        "affine_set<(d0) : (d0 >= 0)>",  # nor does a comparison's
        '"((((((((["',  # brackets in strings nest nothing
        "[] // ((((((((((\n",  # nor do brackets in comments
    ],
)
def test_nesting_count_skips_what_is_not_a_bracket(filler: str) -> None:
    text = filler * (4 * MAX_NESTING) + nested(MAX_NESTING - 1)
    assert not refused(text)


def test_a_stray_angle_bracket_ends_with_the_brackets_around_it() -> None:
    # A '<' never closed (malformed IR) stops counting when the bracket around it closes.
    text = '"x.y"() {a = (a < b)} : () -> ()\n' * (2 * MAX_NESTING) + nested(MAX_NESTING - 1)
    assert not refused(text)
    assert refused("a < b\n" + nested(MAX_NESTING - 1))


def test_the_first_bracket_past_the_limit_is_reported_in_bytes() -> None:
    text = "// é\n  é" + "(" * (MAX_NESTING + 5)
    with pytest.raises(ParseError) as found:
        check_text(text, "input.mlir")
    # Two spaces and a two-byte 'é' before the first bracket.
    assert str(found.value.location) == f"input.mlir:2:{4 + MAX_NESTING + 1}"
