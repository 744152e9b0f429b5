"""``--verify-diagnostics``: checks emitted diagnostics against ``// expected-...`` comments.

Follows mlir-opt: ``// expected-error@+1 {{text}}`` expects an error whose message contains
``text`` on the next line; ``@-N``, ``@+N``, ``@above``, ``@below`` and no offset (this line) are
accepted, for error, warning, remark and note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .diagnostics import Diagnostic

_EXPECTED = re.compile(
    r"expected-(error|warning|remark|note)\s*(?:@(above|below|[+-]?\d+))?\s*\{\{(.*?)\}\}"
)


@dataclass
class Expectation:
    severity: str
    line: int
    text: str
    source_line: int
    source_col: int = 1  # where the comment's `expected-` starts, for a located report
    found: bool = False


def expectations(text: str) -> list[Expectation]:
    found: list[Expectation] = []
    # Lines end at '\n' only, as MLIR counts them (str.splitlines also splits at '\f', ...).
    for number, line in enumerate(text.split("\n"), start=1):
        for match in _EXPECTED.finditer(line):
            severity, offset, message = match.groups()
            target = number
            if offset == "above":
                target = number - 1
            elif offset == "below":
                target = number + 1
            elif offset is not None:
                target = number + int(offset) if offset[0] in "+-" else int(offset)
            column = len(line[: match.start()].encode()) + 1  # MLIR counts bytes
            found.append(Expectation(severity, target, message, number, column))
    return found


def _flatten(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for diag in diagnostics:
        out.append(diag)
        out += _flatten(diag.notes)
    return out


def check(text: str, source_name: str, diagnostics: list[Diagnostic]) -> list[str]:
    """Problems as mlir-opt prints them; empty when every expectation matched exactly."""
    wanted = expectations(text)
    problems: list[str] = []
    for diag in _flatten(diagnostics):
        line = diag.location.line if diag.location else None
        match = next(
            (
                w
                for w in wanted
                if not w.found
                and w.severity == diag.severity
                and w.line == line
                and w.text in diag.message
            ),
            None,
        )
        if match is None:
            where = f"{diag.location}" if diag.location else f"{source_name}:0:0"
            problems.append(f"{where}: error: unexpected {diag.severity}: {diag.message}")
        else:
            match.found = True
    for want in wanted:
        if not want.found:
            where = f"{source_name}:{want.source_line}:{want.source_col}"
            problems.append(
                f'{where}: error: expected {want.severity} "{want.text}" was not produced'
            )
    return problems
