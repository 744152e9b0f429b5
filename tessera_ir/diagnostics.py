"""MLIR diagnostics as plain Python records, and the one place that converts binding errors.

The bindings report problems three ways: an ``MLIRError`` carrying ``DiagnosticInfo``s (parse and
pass-manager failures), diagnostics sent to a context's handler (``Location.emit_error``), and
Tessera's own ``LocatedError``s. All three become ``Diagnostic`` records here, printed the way
mlir-opt prints them: ``file:line:col: error: message``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from mlir import ir

from .errors import SourceLocation

if TYPE_CHECKING:

    class MLIRError(Exception):
        """What the bindings raise for parse, verify and pass failures. Their stubs leave it out:
        mlir/_mlir_libs/__init__.py defines it at import time and sets it as ``ir.MLIRError``."""

        message: str
        error_diagnostics: list[ir.DiagnosticInfo]

else:
    MLIRError = ir.MLIRError

_SEVERITY = {
    ir.DiagnosticSeverity.ERROR: "error",
    ir.DiagnosticSeverity.WARNING: "warning",
    ir.DiagnosticSeverity.NOTE: "note",
    ir.DiagnosticSeverity.REMARK: "remark",
}


@dataclass
class Diagnostic:
    severity: str
    message: str
    location: SourceLocation | None
    notes: list[Diagnostic] = field(default_factory=list)

    def format(self) -> str:
        where = f"{self.location}: " if self.location else "loc(unknown): "
        lines = [f"{where}{self.severity}: {self.message}"]
        lines += [note.format() for note in self.notes]
        return "\n".join(lines)


def source_location(loc: ir.Location) -> SourceLocation | None:
    """The file position behind an MLIR location (looking through names, call sites, fusions)."""
    if loc.is_a_file():
        return SourceLocation(loc.filename, loc.start_line, loc.start_col)
    if loc.is_a_name():
        return source_location(loc.child_loc)
    if loc.is_a_callsite():
        return source_location(loc.callee)
    if loc.is_a_fused():
        for inner in loc.locations:
            found = source_location(inner)
            if found is not None:
                return found
    return None


def _from_binding(diag: ir.Diagnostic | ir.DiagnosticInfo) -> Diagnostic:
    return Diagnostic(
        severity=_SEVERITY.get(diag.severity, "error"),
        message=str(diag.message),
        location=source_location(diag.location),
        notes=[_from_binding(note) for note in diag.notes],
    )


def from_mlir_error(error: MLIRError) -> list[Diagnostic]:
    found = [_from_binding(d) for d in error.error_diagnostics]
    if not found:
        found = [Diagnostic("error", str(error), None)]
    return found


class DiagnosticCollector:
    """Collects every diagnostic the context emits while attached (``collector.attached()``)."""

    def __init__(self, context: ir.Context) -> None:
        self.context = context
        self.diagnostics: list[Diagnostic] = []

    def _handle(self, diag: ir.Diagnostic) -> bool:
        self.diagnostics.append(_from_binding(diag))
        return True  # handled: do not also print it to stderr

    @contextmanager
    def attached(self) -> Iterator[DiagnosticCollector]:
        # The stubs type the handler as `object`; the bindings return a DiagnosticHandler.
        handler = cast(ir.DiagnosticHandler, self.context.attach_diagnostic_handler(self._handle))
        try:
            yield self
        finally:
            handler.detach()

    def add(self, diags: list[Diagnostic]) -> None:
        """Adds diagnostics that arrived through an exception, skipping ones already seen."""
        seen = {(d.severity, d.message, str(d.location)) for d in self.diagnostics}
        for diag in diags:
            if (diag.severity, diag.message, str(diag.location)) not in seen:
                self.diagnostics.append(diag)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]
