"""The MLIR context Tessera works in, and parsing IR text into it.

Parsing starts with ``check_text``: a scan of the text for the inputs on which upstream MLIR's
parser (or the verifier it runs) does not report an error but takes the process down (an
assertion, a stack overflow). Each known class is recognised and refused with a located
``ParseError``, so a user never meets the crash; everything else is left to MLIR's own
diagnostics. The classes were found by fuzzing tessera-opt (test/fuzz); a class not known here
is still contained by tessera-opt's worker process, and belongs here once found.
"""

from __future__ import annotations

import bisect
import re

from mlir import ir

from .diagnostics import MLIRError, from_mlir_error
from .errors import ParseError, SourceLocation
from .ir_walk import walk_ops

# The parser recurses once per level of brackets and overflows the stack (a segfault) at about
# 4,500 levels of regions or 8,000 of arrays; Tessera's passes recurse in Python too (the
# tessera-cse walk fails at 1,024 nested regions). No IR in practice nests past a few dozen.
MAX_NESTING = 256

# Strings (which may not span lines) and comments: brackets inside them nest nothing.
_SKIPPED = re.compile(r'"(?:[^"\\\n]|\\.)*"?|//[^\n]*')
# Everything the exact scan looks at: the above, arrows (whose '>' closes nothing), integer-set
# comparisons (likewise) and brackets.
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|//[^\n]*|->|>=|[\[\](){}<>]')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"()[]{}<>"))
_INNERMOST_PAIR = re.compile(rb"\(\)|\[\]|\{\}|<>")
_CLOSER = {")": "(", "]": "[", "}": "{", ">": "<"}
# linalg.broadcast / linalg.reduce (`dimensions`) and linalg.transpose (`permutation`) read
# their integer list with a hand-written parser that, on any malformed list (a float, an
# integer beyond 64 bits, a stray comma, no brackets), stores a null attribute and aborts on
# an assertion ("attributes may never be null"). In their custom syntax the keyword follows the
# op name, `outs(...)`, an attribute dictionary or properties; in an attribute dictionary (of
# any op, generic syntax included) the name follows `{` or `,` and goes through the ordinary,
# safe attribute parser. So every bare `dimensions =` / `permutation =` not preceded by `{` or
# `,` is checked; SSA names, symbols, aliases and strings are other tokens.
_SPACE = r"(?:[ \t\n\r\x00]|//[^\n]*(?:\n|$))*"
_INTEGER_LIST_KEYWORD = re.compile(
    rf"(?<![\w$.#%@!^\"])(?P<name>dimensions|permutation)(?![\w$.]){_SPACE}={_SPACE}", re.ASCII
)
_INTEGER_LIST_WORDS = ("dimensions", "permutation")
_DICTIONARY_ENTRY_AFTER = "{,"
# The tokens of MLIR's lexer that can follow inside such a list; its whitespace is exactly
# space, tab, newline, carriage return and (inside the buffer) NUL.
_LIST_TOKEN = re.compile(
    r"(?P<space>(?:[ \t\n\r\x00]|//[^\n]*)+)"
    r"|(?P<int>0x[0-9a-fA-F]+|[0-9]+(?P<frac>\.[0-9]*([eE][-+]?[0-9]+)?)?)"
    r"|(?P<word>[A-Za-z_][\w$.]*)|(?P<other>.)",
    re.DOTALL | re.ASCII,
)
_I64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[ \t\n\r]*(?:0x[0-9a-fA-F]+|[0-9]+)", re.ASCII)
# A shape whose sizes could multiply past 2^63 has at least 19 digits: only such runs of sizes
# are looked at (the regex engine skips the rest at its own speed).
_SHAPED = ("tensor", "memref", "vector")
_LONG_SHAPE = re.compile(r"<(?P<dims>[0-9x?\[\]]{19,})")
_REASSOCIATION = re.compile(
    r"(?:(?<=tensor\.|memref\.)(?:collapse|expand)_shape[ \t\n\r]+%[\w$.-]+(?:#[0-9]+)?"
    r"|reassociation[ \t\n\r]*=)[ \t\n\r]*(?P<list>\[(?:[^\[\]]|\[[^\[\]]*\])*\])",
    re.ASCII,
)
_INDEX_ARRAY = re.compile(
    r"(?<![\w$.])array[ \t\n\r]*<[ \t\n\r]*(?P<type>index)(?![\w$.])", re.ASCII
)
# Only a negative or a 10-digit index can have its low 32 bits all ones.
_MAYBE_ALL_ONES = re.compile(r"-|0x|[0-9]{10}")
_CONCAT_DIM = re.compile(
    r"(?:tensor\.concat[ \t\n\r]+dim[ \t\n\r]*\("
    r'|"tensor\.concat"[^\n]*?\bdim[ \t\n\r]*=)[ \t\n\r]*'
    r"(?P<dim>-?[ \t\n\r]*(?:0x[0-9a-fA-F]+|[0-9]+))",
    re.ASCII,
)


class _Scan:
    """The text under check: offsets to MLIR's 1-based line and byte column, and the spans of
    strings and comments (found once, when a check first asks)."""

    def __init__(self, text: str, source_name: str) -> None:
        self.text, self.source_name = text, source_name
        self._skipped: list[tuple[int, int]] | None = None

    def location(self, offset: int) -> SourceLocation:
        start = self.text.rfind("\n", 0, offset) + 1
        column = len(self.text[start:offset].encode("utf-8", "replace")) + 1
        return SourceLocation(self.source_name, self.text.count("\n", 0, offset) + 1, column)

    def refuse(self, offset: int, message: str) -> ParseError:
        return ParseError(message, self.location(offset))

    @property
    def skipped(self) -> list[tuple[int, int]]:
        if self._skipped is None:
            self._skipped = [m.span() for m in _SKIPPED.finditer(self.text)]
        return self._skipped

    def in_code(self, offset: int) -> bool:
        return _span_at(self.skipped, offset) is None

    def matches(self, words: tuple[str, ...], pattern: re.Pattern[str]) -> list[re.Match[str]]:
        """Matches of ``pattern`` starting where one of ``words`` does, outside strings and
        comments; the words are found at str.find's speed before the regex runs."""
        starts = sorted(i for word in words for i in _occurrences(self.text, word))
        found = [m for i in starts if (m := pattern.match(self.text, i))]
        return [m for m in found if self.in_code(m.start())]


def check_text(text: str, source_name: str = "<string>") -> None:
    """Raises a located ``ParseError`` where upstream MLIR's parser would crash on ``text``."""
    scan = _Scan(text, source_name)
    if not _shallow(text):
        _check_nesting(scan)
    _check_integer_lists(scan)
    _check_element_counts(scan)
    _check_reassociations(scan)
    _check_concat_dims(scan)
    _check_index_arrays(scan)


def _occurrences(text: str, word: str) -> list[int]:
    found: list[int] = []
    at = text.find(word)
    while at >= 0:
        found.append(at)
        at = text.find(word, at + 1)
    return found


def _shallow(text: str) -> bool:
    """Whether the brackets balance and nest at most MAX_NESTING deep, found at the regex
    engine's speed: each round deletes the innermost pairs, so a balanced text is empty after
    as many rounds as it nests deep. Anything else goes to the exact scan."""
    code = _SKIPPED.sub("", text).encode("utf-8", "surrogateescape")
    brackets = code.replace(b"->", b"").replace(b">=", b"").translate(None, _NOT_BRACKETS)
    for _ in range(MAX_NESTING):
        if not brackets:
            return True
        brackets, pairs = _INNERMOST_PAIR.subn(b"", brackets)
        if not pairs:
            return False
    return not brackets


def _check_nesting(scan: _Scan) -> None:
    """Refuses, at the bracket where it happens, nesting deeper than MAX_NESTING."""
    stack: list[str] = []
    for token in _TOKEN.finditer(scan.text):
        kind = token.group(0)
        if kind in "([{<":
            stack.append(kind)
            if len(stack) > MAX_NESTING:
                raise scan.refuse(
                    token.start(),
                    f"brackets nest deeper than {MAX_NESTING} levels here; Tessera refuses such "
                    "IR rather than let the parser overflow its stack",
                )
        elif kind in _CLOSER and _CLOSER[kind] in stack:
            # A stray '<' (never one of a matched pair) must not keep the depth up forever.
            while stack.pop() != _CLOSER[kind]:
                pass


def _span_at(spans: list[tuple[int, int]], offset: int) -> tuple[int, int] | None:
    """The span of ``spans`` (sorted, disjoint) holding ``offset``, if any."""
    index = bisect.bisect_right(spans, (offset, offset)) - 1
    return spans[index] if index >= 0 and offset < spans[index][1] else None


def _previous_char(text: str, offset: int, skipped: list[tuple[int, int]]) -> str:
    """The last character before ``offset`` that is neither whitespace nor in a comment."""
    offset -= 1
    while offset >= 0:
        span = _span_at(skipped, offset)
        if text[offset] in " \t\n\r\x00":
            offset -= 1
        elif span is not None and text.startswith("//", span[0]):
            offset = span[0] - 1
        else:
            return text[offset]
    return ""


def _check_integer_lists(scan: _Scan) -> None:
    for found in scan.matches(_INTEGER_LIST_WORDS, _INTEGER_LIST_KEYWORD):
        if _previous_char(scan.text, found.start(), scan.skipped) not in _DICTIONARY_ENTRY_AFTER:
            _check_integer_list(scan, found.end(), found.group("name"))


def _check_integer_list(scan: _Scan, at: int, name: str) -> None:
    """Accepts exactly what the parser's ``DenseI64ArrayAttr::parse`` accepts at ``at``:
    ``[`` then nothing or comma-separated elements then ``]``, an element being ``true``,
    ``false`` or an optionally negated decimal or hex integer that fits in 64 bits."""
    text = scan.text
    tokens = (m for m in _LIST_TOKEN.finditer(text, at) if m.lastgroup != "space")

    def refuse(token: re.Match[str] | None, expected: str) -> ParseError:
        if token is None:
            found = "the end of the input"
        elif token.group(0).isprintable():
            found = f"'{token.group(0)}'"
        else:
            found = f"the character {token.group(0)!a}"
        return scan.refuse(
            token.start() if token is not None else len(text),
            f"'{name}' takes a list of 64-bit integers such as [0, 1]: expected {expected}, "
            f"found {found}",
        )

    token = next(tokens, None)
    if token is None or token.group(0) != "[":
        raise refuse(token, "'['")
    token = next(tokens, None)
    if token is not None and token.group(0) == "]":
        return
    while True:
        negative = token is not None and token.group(0) == "-"
        if negative:
            token = next(tokens, None)
        if token is None or not _is_i64(token, negative):
            raise refuse(token, "a 64-bit integer")
        token = next(tokens, None)
        if token is not None and token.group(0) == "]":
            return
        if token is None or token.group(0) != ",":
            raise refuse(token, "',' or ']'")
        token = next(tokens, None)


def _is_i64(token: re.Match[str], negative: bool) -> bool:
    if token.lastgroup == "word":
        return not negative and token.group(0) in ("true", "false")
    if token.lastgroup != "int" or token.group("frac"):
        return False
    value = int(token.group(0), 0 if token.group(0).startswith("0x") else 10)
    return value <= _I64_MAX + negative


def _check_element_counts(scan: _Scan) -> None:
    """Refuses a tensor, memref or vector type whose static sizes multiply past 2^63 - 1: MLIR
    accepts the type but asserts on its element count or strides wherever they are computed
    (a dense constant, a reshape's verifier, a memref's layout). No such value can exist."""
    for found in _LONG_SHAPE.finditer(scan.text):
        kind = next((k for k in _SHAPED if scan.text.endswith(k, 0, found.start())), None)
        if kind is None:
            continue
        sizes = [int(d.strip("[]")) for d in found.group("dims").split("x")[:-1] if d != "?"]
        if any(size > _I64_MAX for size in sizes):
            continue  # the parser reports those itself ("invalid dimension")
        count = 1
        for size in sizes:
            count *= size
        if count > _I64_MAX and scan.in_code(found.start()):
            raise scan.refuse(
                found.start() + 1,
                f"{kind}<{found.group('dims')}...> has {count} elements; MLIR counts elements "
                "in 64 bits and crashes past 2^63 - 1",
            )


def _check_reassociations(scan: _Scan) -> None:
    """Refuses a reassociation index of tensor/memref.expand_shape or collapse_shape whose low
    32 bits are all ones (-1, 4294967295, 2^63 - 1, ...): MLIR's verifier counts the
    dimensions in 32 bits, gets zero, and asserts ("willBeValidAffineMap"). Other bad indices
    are its own business (or Tessera's verifier's, see dialects/upstream_gaps.py)."""
    for found in scan.matches(("collapse_shape", "expand_shape", "reassociation"), _REASSOCIATION):
        if not _MAYBE_ALL_ONES.search(found.group("list")):
            continue
        for number in _INTEGER.finditer(scan.text, *found.span("list")):
            value = _integer(number.group(0))
            if -(2**63) <= value <= _I64_MAX and value & 0xFFFFFFFF == 0xFFFFFFFF:
                raise scan.refuse(
                    number.start(),
                    f"reassociation index {value} is out of range (MLIR's verifier would "
                    "crash on it)",
                )


def _check_concat_dims(scan: _Scan) -> None:
    """Refuses tensor.concat along a negative dim: its verifier indexes the shape with it and
    asserts ("invalid index for shaped type") instead of reporting it."""
    for found in scan.matches(("tensor.concat", '"tensor.concat"'), _CONCAT_DIM):
        value = _integer(found.group("dim"))
        if -(2**63) <= value < 0:
            raise scan.refuse(
                found.start("dim"),
                f"tensor.concat along dim {value}: the dim must be at least 0",
            )


def _check_index_arrays(scan: _Scan) -> None:
    """Refuses ``array<index: ...>``: the dense array parser takes index as an integer type,
    then asks for its bit width and asserts ("only integers and floats have a bitwidth")."""
    for found in scan.matches(("array",), _INDEX_ARRAY):
        raise scan.refuse(
            found.start("type"), "array<index: ...> is not an array: index has no bit width"
        )


def _integer(text: str) -> int:
    digits = text.replace(" ", "").replace("\t", "").replace("\n", "").replace("\r", "")
    negative = digits.startswith("-")
    digits = digits.lstrip("-")
    value = int(digits, 16) if digits.startswith("0x") else int(digits)
    return -value if negative else value


def make_context() -> ir.Context:
    """A context with every upstream dialect and the (unregistered, Python-held) tessera ops."""
    context = ir.Context()
    # The tessera dialect lives in Python (docs/architecture.md, "The dialect"), so MLIR must
    # accept its ops as unregistered; Tessera's own verifier checks them instead.
    context.allow_unregistered_dialects = True
    return context


def parse_module(text: str, context: ir.Context, source_name: str = "<string>") -> ir.Module:
    """Parses IR text into a module; raises ``ParseError`` at the offending line and column.

    ``check_text`` runs first, so text on which the parser would crash is refused instead.
    ``Operation.parse`` is used (not ``Module.parse``) because only it records ``source_name``
    in the locations, which diagnostics need. A text holding ops without a ``module`` around
    them is wrapped in one, as mlir-opt does (several ops: ``_parse_several``).
    """
    check_text(text, source_name)
    with context:
        try:
            parsed = ir.Operation.parse(text, source_name=source_name).operation
        except MLIRError as error:
            first = from_mlir_error(error)[0]
            if first.message.startswith(_SEVERAL_TOP_LEVEL_OPS):
                return _parse_several(text, context, source_name)
            raise ParseError(first.message, first.location) from None
        module = ir.Module.create(loc=parsed.location)
        if parsed.name != "builtin.module":
            module.body.append(parsed)
            return module
        # Iterating an op's attributes gives their names (in these bindings).
        for name in list(parsed.attributes):
            module.operation.attributes[name] = parsed.attributes[name]
        for op in list(parsed.regions[0].blocks[0].operations):
            module.body.append(op)
        parsed.erase()
        return module


# Operation.parse takes exactly one top-level op (and says so at line 0); mlir-opt wraps
# several in a module, and so does Module.parse, which however names every location "-".
_SEVERAL_TOP_LEVEL_OPS = "source must contain a single top-level operation"
_MODULE_PARSE_SOURCE = "-"


def _parse_several(text: str, context: ir.Context, source_name: str) -> ir.Module:
    """Several top-level ops, wrapped in a module, their locations given ``source_name``."""

    def renamed(where: SourceLocation | None) -> SourceLocation | None:
        if where is None or where.file != _MODULE_PARSE_SOURCE:
            return where
        return SourceLocation(source_name, where.line, where.col)

    try:
        module = ir.Module.parse(text, context)
    except MLIRError as error:
        first = from_mlir_error(error)[0]
        raise ParseError(first.message, renamed(first.location)) from None
    for op in walk_ops(module.operation):
        loc = op.location
        if loc.is_a_file() and loc.filename == _MODULE_PARSE_SOURCE:
            op.location = ir.Location.file(source_name, loc.start_line, loc.start_col, context)
    return module
