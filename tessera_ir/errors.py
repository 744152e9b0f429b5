"""Tessera's one error hierarchy.

Every error a user can meet derives from ``TesseraError``. Errors that concern a place in the IR
carry that place (``file:line:col``) so that CLIs can print MLIR-style diagnostics.
"""

from __future__ import annotations


class TesseraError(Exception):
    """Base of all errors raised by Tessera."""


class SourceLocation:
    """A place in an IR text: file, line and column (1-based), as MLIR reports them."""

    __slots__ = ("col", "file", "line")

    def __init__(self, file: str, line: int, col: int) -> None:
        self.file, self.line, self.col = file, line, col

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        return f"SourceLocation({self.file!r}, {self.line}, {self.col})"


class LocatedError(TesseraError):
    """An error at a place in the IR (or at an unknown place when ``location`` is None)."""

    def __init__(self, message: str, location: SourceLocation | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: error: {self.message}"


class ParseError(LocatedError):
    """The IR text could not be parsed."""


class VerifyError(LocatedError):
    """An op breaks its schema (operands, results, attributes) or its verifier."""


class PassError(LocatedError):
    """A pass found IR it cannot handle, or a pass pipeline could not be built or run."""


class LoweringError(LocatedError):
    """An op has no lowering for the chosen target, or its lowering failed."""


class ToolchainError(TesseraError):
    """An external tool (linker, ptxas, ...) failed; ``command`` reproduces the failure."""

    def __init__(self, message: str, command: list[str] | None = None) -> None:
        if command:
            message = f"{message}\n  to reproduce: {' '.join(command)}"
        super().__init__(message)
        self.command = command


class UnsupportedOpError(TesseraError):
    """The front end met a torch op it cannot translate."""

    def __init__(self, op: str, module_path: str, detail: str = "") -> None:
        where = module_path or "<top-level module>"
        message = f"unsupported torch op '{op}' in module '{where}'"
        if detail:
            message += f": {detail}"
        super().__init__(message)
        self.op = op
        self.module_path = module_path


class CheckpointError(TesseraError):
    """A checkpoint is missing, truncated or does not match the model it is loaded into."""

    def __init__(self, message: str, path: str | None = None, key: str | None = None) -> None:
        parts = []
        if path:
            parts.append(f"{path}")
        if key:
            parts.append(f"key '{key}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path = path
        self.key = key


class RuntimeInputError(TesseraError):
    """A compiled model was called with inputs it cannot take (shape, dtype, range)."""
