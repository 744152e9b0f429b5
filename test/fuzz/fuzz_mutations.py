"""Seeded mutations of IR text: the ways a file goes bad in the hands of people and tools.

Each mutation is a function ``(data, rng, donors) -> bytes`` working on the raw bytes, so that
truncation, random bytes and invalid UTF-8 are as easy to make as a changed type. ``donors`` are
lines of other seeds, spliced in to make IR that is valid but out of place. Given the same seed
and inputs, every mutation makes the same bytes: a failing case is reproduced from its seed and
index alone.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

Mutation = Callable[[bytes, random.Random, Sequence[str]], bytes]

# Element types the dialect and passes take, and ones they may not: f8/f4, odd integer widths,
# non-scalar and nonsense types.
TYPES = (
    "f32", "f16", "bf16", "f64", "i1", "i8", "i16", "i32", "i64", "index", "f8E4M3FN", "f8E5M2",
    "f8E4M3FNUZ", "f8E5M2FNUZ", "f8E8M0FNU", "f4E2M1FN", "f6E2M3FN", "tf32", "f80", "f128", "i2",
    "i3", "i128", "ui8", "si32", "complex<f32>", "none", "vector<4xf32>", "tensor<2xf32>",
    "memref<2xf32>", "!llvm.ptr", "tuple<f32>", "!foo.bar",
)  # fmt: skip
# Numbers at the edges: sign, 32/64-bit overflow, float specials, malformed literals.
NUMBERS = (
    "0", "-1", "1", "2", "-2", "3", "-7", "255", "65536", "2147483647", "2147483648",
    "-2147483648", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
    "-9223372036854775809", "340282366920938463463374607431768211456", "1.5", "-0.0", "0.5",
    "1.0e+308", "1e400", "-1e-400", "0x7FC00000", "0xFFFFFFFFFFFFFFFFFF", "nan", "inf", "1.",
    "1e", "0x",
)  # fmt: skip
# Dimensions of shaped types: empty, dynamic, 2^31, 2^32, 2^63, negative, and 2^59 (whose
# product with a few small dims passes 2^63).
DIMS = (
    "0", "1", "?", "2147483648", "4294967296", "9223372036854775807", "99999999999999999999",
    "-1", "65537", "3", "576460752303423488",
)  # fmt: skip
# Attribute values of every kind, well-formed and not.
VALUES = (
    "true", "false", "unit", '"text"', '""', "1.0 : f32", "1.0 : f64", "-1.0 : f32", "0 : i64",
    "-1 : i64", "2147483648 : i64", "9223372036854775807 : i32", "[1, 2]", "[]", "[[1]]",
    "array<i64: 1, 2>", "array<i64>", "array<f32: 1.0>", "dense<1.0> : tensor<2xf32>",
    "@sym", "#foo.bar", "{a = 1}", "0x7FC00000 : f32", "nan : f32", "affine_map<(d0) -> (d0)>",
    "i32", "loc(unknown)",
)  # fmt: skip
# The contents of the integer lists that linalg's custom syntax takes (dimensions, permutation).
INTEGER_LISTS = (
    "0.5", "", "1, 0, 2", "-1", "9223372036854775808", "x", "[0]", "0,", "0, 0", "99", "1.0e3",
    '"0"', "true",
)  # fmt: skip
NESTING_DEPTHS = (64, 200, 257, 1000, 3000, 20000)
INVALID_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80")

_TYPE = re.compile(
    r"(?<![A-Za-wyz0-9_.$#!@%])(f8E4M3FN|f8E5M2|bf16|f16|f32|f64|i1|i8|i16|i32|i64|index)"
    r"(?![\w.])"
)
_NUMBER = re.compile(r"(?<![\w.%#@^$])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w.])")
_DIM = re.compile(r"(?<=[<x])(\d+|\?)(?=x)")
_BOOL = re.compile(r"\b(true|false)\b")
_ATTR_ENTRY = re.compile(r"(?<=[{,]) ?\b([a-z_]\w*) = ([^,{}]+)(,)?")
_INTEGER_LIST = re.compile(r"\b(dimensions|permutation) = \[([^\]]*)\]")
_OP_NAME = re.compile(r'"[a-z_]+(\.[a-z_0-9]+)+"|(?<=[= ])[a-z_]+\.[a-z_.]+(?= )')
_SSA = re.compile(r"%[\w.$-]+")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _replace_match(
    data: bytes, rng: random.Random, pattern: re.Pattern[str], make: Callable[[str], str]
) -> bytes:
    """Replaces one random match of ``pattern`` by ``make(match)``; unchanged when none."""
    text = _text(data)
    matches = list(pattern.finditer(text))
    if not matches:
        return data
    found = rng.choice(matches)
    return _bytes(text[: found.start()] + make(found.group(0)) + text[found.end() :])


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


# ------------------------------------------------------------------------------- the mutations


def truncate(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def delete_lines(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    lines = _lines(data)
    start = rng.randrange(len(lines))
    count = rng.choice((1, 1, 1, 2, 3))
    return b"".join(lines[:start] + lines[start + count :])


def duplicate_line(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    return b"".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])


def swap_lines(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    lines = _lines(data)
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[a], lines[b] = lines[b], lines[a]
    return b"".join(lines)


def splice_line(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Puts a line of another seed in place of (or next to) one of this seed's lines."""
    if not donors:
        return data
    lines = _lines(data)
    index = rng.randrange(len(lines))
    donor = _bytes(rng.choice(donors).rstrip("\n") + "\n")
    keep = lines[index : index + 1] if rng.random() < 0.5 else []
    return b"".join([*lines[:index], donor, *keep, *lines[index + 1 :]])


def flip_type(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    return _replace_match(data, rng, _TYPE, lambda _: rng.choice(TYPES))


def flip_number(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    return _replace_match(data, rng, _NUMBER, lambda _: rng.choice(NUMBERS))


def flip_dim(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    return _replace_match(data, rng, _DIM, lambda _: rng.choice(DIMS))


def retype_all(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Replaces every use of one element type by another: the IR stays consistent, so the new
    type reaches the verifier and the passes instead of stopping at a type mismatch."""
    text = _text(data)
    present = sorted({m.group(0) for m in _TYPE.finditer(text)})
    if not present:
        return data
    old, new = rng.choice(present), rng.choice(TYPES)
    return _bytes(_TYPE.sub(lambda m: new if m.group(0) == old else m.group(0), text))


def resize_all(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Replaces every occurrence of one static dimension by another, consistently (so shapes
    still agree): huge, zero and odd sizes reach the passes and the lowering."""
    text = _text(data)
    present = sorted({m.group(0) for m in _DIM.finditer(text)} - {"?"})
    if not present:
        return data
    old, new = rng.choice(present), rng.choice(DIMS)
    return _bytes(_DIM.sub(lambda m: new if m.group(0) == old else m.group(0), text))


def flip_bool(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    return _replace_match(data, rng, _BOOL, lambda b: "false" if b == "true" else "true")


def change_attribute(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Gives one ``name = value`` attribute another value, or removes it."""

    def change(entry: str) -> str:
        if rng.random() < 0.3:
            return ""
        name = entry.split("=", 1)[0]
        comma = "," if entry.rstrip().endswith(",") else ""
        return f"{name}= {rng.choice(VALUES)}{comma}"

    return _replace_match(data, rng, _ATTR_ENTRY, change)


def change_integer_list(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    def change(found: str) -> str:
        return f"{found.split('=', 1)[0]}= [{rng.choice(INTEGER_LISTS)}]"

    return _replace_match(data, rng, _INTEGER_LIST, change)


def rename_op(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Replaces an op name by another one seen in this seed, or by one no dialect has."""
    text = _text(data)
    names = sorted({m.group(0).strip('"') for m in _OP_NAME.finditer(text)})
    others = [*names, "tessera.bogus", "tessera.attention", "foo.bar", "tessera.region"]

    def rename(found: str) -> str:
        new = rng.choice(others)
        return f'"{new}"' if found.startswith('"') else new

    return _replace_match(data, rng, _OP_NAME, rename)


def swap_value(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Uses another SSA value in place of one: wrong types, dominance, self-reference."""
    text = _text(data)
    names = sorted({m.group(0) for m in _SSA.finditer(text)})
    return _replace_match(data, rng, _SSA, lambda _: rng.choice(names))


def nest(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Nests something very deep: arrays, tuple types, regions, or brackets left open."""
    depth = rng.choice(NESTING_DEPTHS)
    kind = rng.randrange(4)
    if kind == 0:
        return _replace_match(data, rng, _NUMBER, lambda n: "[" * depth + n + "]" * depth)
    if kind == 1:
        return _replace_match(data, rng, _TYPE, lambda t: "tuple<" * depth + t + ">" * depth)
    lines = _lines(data)
    index = rng.randrange(len(lines))
    if kind == 2:
        wrapped = b'"test.nest"() ({\n' * depth + lines[index] + b"}) : () -> ()\n" * depth
        return b"".join([*lines[:index], wrapped, *lines[index + 1 :]])
    opener = rng.choice((b"(", b"[", b"{", b"<"))
    return b"".join([*lines[:index], opener * depth + b"\n", *lines[index:]])


def random_bytes(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    """Inserts or overwrites a few arbitrary bytes (NUL, controls, high bytes included)."""
    at = rng.randrange(len(data) + 1)
    top = 256 if rng.random() < 0.2 else 128  # mostly ASCII, which reaches past the decoder
    noise = bytes(rng.randrange(top) for _ in range(rng.randint(1, 8)))
    cut = len(noise) if rng.random() < 0.5 else 0
    return data[:at] + noise + data[at + cut :]


def invalid_utf8(data: bytes, rng: random.Random, donors: Sequence[str]) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(INVALID_UTF8) + data[at:]


MUTATIONS: dict[str, Mutation] = {
    fn.__name__: fn
    for fn in (
        truncate,
        delete_lines,
        duplicate_line,
        swap_lines,
        splice_line,
        flip_type,
        flip_number,
        flip_dim,
        retype_all,
        resize_all,
        flip_bool,
        change_attribute,
        change_integer_list,
        rename_op,
        swap_value,
        nest,
        random_bytes,
        invalid_utf8,
    )
}
# How often each is drawn: the token-level ones keep most of the IR valid and so reach the
# passes; the blunt ones mostly exercise the parser and need fewer cases.
WEIGHTS: dict[str, int] = {
    "truncate": 2,
    "delete_lines": 3,
    "duplicate_line": 2,
    "swap_lines": 2,
    "splice_line": 3,
    "flip_type": 6,
    "flip_number": 5,
    "flip_dim": 6,
    "retype_all": 4,
    "resize_all": 4,
    "flip_bool": 2,
    "change_attribute": 5,
    "change_integer_list": 2,
    "rename_op": 3,
    "swap_value": 4,
    "nest": 2,
    "random_bytes": 2,
    "invalid_utf8": 1,
}


def mutate(data: bytes, rng: random.Random, donors: Sequence[str] = ()) -> tuple[bytes, list[str]]:
    """One to three mutations drawn by ``rng``: the new bytes and the mutations' names."""
    names = list(MUTATIONS)
    weights = [WEIGHTS[name] for name in names]
    applied: list[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name = rng.choices(names, weights)[0]
        data = MUTATIONS[name](data, rng, donors)
        applied.append(name)
    return data, applied
