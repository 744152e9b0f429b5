"""The fuzzer's seeds: every lit input, cut into its ``// -----`` chunks, each with the
tessera-opt arguments that the file's RUN lines pass.

A chunk is fuzzed on its own (not the whole file) so that one case costs one small module's
parse and passes; the RUN lines decide which passes see it, so the fuzz reaches every pass the
lit tests reach.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

LIT_ROOT = Path(__file__).resolve().parent.parent / "lit"
SPLIT = re.compile(r"^\s*// -----\s*$", re.MULTILINE)
# FileCheck lines and prose are comments the parser skips: mutating them tests nothing.
# `expected-*` comments stay, since --verify-diagnostics reads them.
_COMMENT_LINE = re.compile(r"^\s*//(?!.*expected-(error|warning|remark|note)).*\n?", re.MULTILINE)
# Where a shell command ends in a RUN line (pipes, chains, redirections).
_COMMAND_END = ("|", "||", "&&", ";")


@dataclass(frozen=True)
class Seed:
    """One chunk of one lit file and the argument lists its RUN lines give tessera-opt."""

    file: str  # relative to test/lit
    chunk: int
    text: str
    recipes: tuple[tuple[str, ...], ...]


def run_lines(text: str) -> list[str]:
    """The commands of a lit file's RUN lines, continuation lines (``\\``) joined."""
    commands: list[str] = []
    pending = ""
    for line in text.splitlines():
        found = line.split("RUN:", 1)
        if len(found) != 2 or not line.lstrip().startswith("//"):
            continue
        part = found[1].strip()
        if part.endswith("\\"):
            pending += part[:-1] + " "
            continue
        commands.append(pending + part)
        pending = ""
    return commands


def recipe(command: str) -> tuple[str, ...] | None:
    """tessera-opt's arguments in one RUN command, without the input and output, or None when
    the command does not run tessera-opt on the file itself (stdin, ``--list-passes``, ...)."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return None
    if "tessera-opt" not in tokens:
        return None
    args: list[str] = []
    rest = iter(tokens[tokens.index("tessera-opt") + 1 :])
    saw_input = False
    for token in rest:
        if token in _COMMAND_END or token.startswith((">", "2>", "<")):
            break
        if token == "-o":
            next(rest, None)
            continue
        if token == "%s":
            saw_input = True
            continue
        if "%" in token or token in ("-", "--list-passes"):
            return None
        # Each seed is already one chunk.
        if token != "--split-input-file":
            args.append(token)
    return tuple(args) if saw_input else None


def seeds(root: Path = LIT_ROOT) -> list[Seed]:
    """Every non-empty chunk of every lit input under ``root``, in a stable order."""
    found: list[Seed] = []
    for path in sorted(root.rglob("*.mlir")):
        if "Output" in path.parts:
            continue
        text = path.read_text()
        recipes = tuple(dict.fromkeys(r for r in map(recipe, run_lines(text)) if r is not None))
        if not recipes:
            continue
        for index, chunk in enumerate(SPLIT.split(text)):
            body = _COMMENT_LINE.sub("", chunk).strip("\n")
            if body.strip():
                found.append(Seed(str(path.relative_to(root)), index, body + "\n", recipes))
    return found
