"""Writing one function's body as MLIR text, the one way Tessera does it.

The front end (``frontend/emitter.py``, tensor values with shapes and locations) and the CPU
kernel generators (``lowering/cpu/builder.py``, loops over memrefs) build on this: fresh SSA
names, lines indented by nesting depth, and ops hoisted to the top of the body, where they
dominate every use however deeply nested the code that asks for them (constants, sizes).
MLIR's parser checks the result.
"""

from __future__ import annotations

from collections.abc import Sequence


class BodyWriter:
    """The body of one function under construction.

    Names count per hint (``%v0``, ``%v1``, ``%m0``), so hints must not end in a digit.
    ``loc``, when not None, is appended to every op written (hoisted ones get
    ``loc(unknown)``, as they belong to no one source line)."""

    def __init__(self, *, locations: bool = False, depth: int = 1) -> None:
        self.prologue: list[str] = []
        self.lines: list[str] = []
        self.depth = depth
        self.loc: str | None = "loc(unknown)" if locations else None
        self._counts: dict[str, int] = {}
        self._hoisted: dict[str, str] = {}

    def fresh(self, hint: str = "v") -> str:
        count = self._counts.get(hint, 0)
        self._counts[hint] = count + 1
        return f"%{hint}{count}"

    def line(self, text: str) -> None:
        """A line at the current depth, as given (block headers, closing braces)."""
        self.lines.append("  " * self.depth + text)

    def statement(self, text: str) -> None:
        """An op without results (or the line closing a multi-line op), with the location."""
        self.line(text if self.loc is None else f"{text} {self.loc}")

    def assign(self, text: str, hint: str = "v") -> str:
        """Writes ``%name = text`` and returns the new name."""
        name = self.fresh(hint)
        self.statement(f"{name} = {text}")
        return name

    def hoist(self, text: str, hint: str = "c") -> str:
        """``%name = text`` at the top of the body, written once per distinct ``text``."""
        if text not in self._hoisted:
            name = self.fresh(hint)
            suffix = "" if self.loc is None else " loc(unknown)"
            self.prologue.append(f"  {name} = {text}{suffix}")
            self._hoisted[text] = name
        return self._hoisted[text]

    def constant(self, literal: str, type_: str) -> str:
        """A hoisted ``arith.constant`` (``literal`` from ``tessera.mlir_text``)."""
        return self.hoist(f"arith.constant {literal} : {type_}")

    def body(self) -> list[str]:
        return [*self.prologue, *self.lines]

    def function(
        self,
        symbol: str,
        params: Sequence[tuple[str, str]],
        results: Sequence[str] = (),
        *,
        private: bool = True,
        attributes: str = "",
    ) -> str:
        """The ``func.func`` holding the body; ``params`` are (name, type) pairs."""
        arguments = ", ".join(f"{name}: {type_}" for name, type_ in params)
        visibility = "private " if private else ""
        returns = ""
        if results:
            returns = " -> " + (results[0] if len(results) == 1 else f"({', '.join(results)})")
        extra = f" attributes {{{attributes}}}" if attributes else ""
        head = f"func.func {visibility}@{symbol}({arguments}){returns}{extra} {{"
        return "\n".join([head, *self.body(), "}"]) + "\n"
