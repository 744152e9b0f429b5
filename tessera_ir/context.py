"""The MLIR context Tessera works in, and parsing IR text into it."""

from __future__ import annotations

from mlir import ir

from .diagnostics import MLIRError, from_mlir_error
from .errors import ParseError


def make_context() -> ir.Context:
    """A context with every upstream dialect and the (unregistered, Python-held) tessera ops."""
    context = ir.Context()
    # The tessera dialect lives in Python (docs/architecture.md, "The dialect"), so MLIR must
    # accept its ops as unregistered; Tessera's own verifier checks them instead.
    context.allow_unregistered_dialects = True
    return context


def parse_module(text: str, context: ir.Context, source_name: str = "<string>") -> ir.Module:
    """Parses IR text into a module; raises ``ParseError`` at the offending line and column.

    ``Operation.parse`` is used (not ``Module.parse``) because only it records ``source_name``
    in the locations, which diagnostics need. A text holding ops without a ``module`` around
    them is wrapped in one, as mlir-opt does.
    """
    with context:
        try:
            parsed = ir.Operation.parse(text, source_name=source_name).operation
        except MLIRError as error:
            first = from_mlir_error(error)[0]
            raise ParseError(first.message, first.location) from None
        module = ir.Module.create(loc=parsed.location)
        if parsed.name != "builtin.module":
            module.body.append(parsed)
            return module
        for attr in parsed.attributes:
            module.operation.attributes[attr.name] = attr.attr
        for op in list(parsed.regions[0].blocks[0].operations):
            module.body.append(op)
        parsed.erase()
        return module
