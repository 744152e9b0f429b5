"""Replacing an op by a call to a kernel function written as MLIR text.

A lowering rule produces the kernel's source for the op's exact types and attributes; the
function is added to the module once per distinct symbol and the op becomes a ``func.call``.
The inliner later dissolves the call where that pays off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mlir import ir

from tessera.diagnostics import MLIRError
from tessera.errors import LoweringError


def mangle(*parts: object) -> str:
    """A symbol-safe name built from types and attribute values."""
    text = "_".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def enclosing_module(op: ir.Operation) -> ir.Operation:
    current = op.operation
    while current.name != "builtin.module":
        parent = current.parent
        if parent is None:
            raise LoweringError(f"'{op.name}' is not inside a module")
        current = parent.operation
    return current


def _symbols(module: ir.Operation) -> set[str]:
    names = set()
    for op in module.regions[0].blocks[0].operations:
        if "sym_name" in op.operation.attributes:
            names.add(ir.StringAttr(op.operation.attributes["sym_name"]).value)
    return names


def ensure_function(module: ir.Operation, symbol: str, source: str) -> None:
    """Adds the functions in ``source`` (one of them named ``symbol``) to ``module``, each
    unless a function of that name is already there (kernels share helper functions)."""
    present = _symbols(module)
    if symbol in present:
        return
    try:
        parsed = ir.Module.parse(source, context=module.context)
    except MLIRError as error:
        raise LoweringError(f"kernel '{symbol}' does not parse: {error}\n{source}") from None
    block = module.regions[0].blocks[0]
    for op in list(parsed.body.operations):
        attributes = op.operation.attributes
        name = ir.StringAttr(attributes["sym_name"]).value if "sym_name" in attributes else None
        if name is not None and name in present:
            continue
        block.append(op.operation)


def call_kernel(
    op: ir.Operation,
    symbol: str,
    source: str,
    operands: Sequence[ir.Value],
    result_types: Sequence[ir.Type],
) -> list[ir.Value]:
    """Inserts ``func.call @symbol(operands)`` before ``op`` and returns its results."""
    ensure_function(enclosing_module(op), symbol, source)
    with ir.InsertionPoint(op), op.location:
        call = ir.Operation.create(
            "func.call",
            results=list(result_types),
            operands=list(operands),
            attributes={"callee": ir.FlatSymbolRefAttr.get(symbol)},
        )
    return list(call.results)


def replace_with_call(
    op: ir.Operation, symbol: str, source: str, operands: Sequence[ir.Value]
) -> None:
    """Replaces ``op`` (one result) by ``func.call @symbol(operands)``, adding the functions
    of ``source`` to the module where missing, and erases ``op``."""
    (result,) = call_kernel(op, symbol, source, operands, [op.results[0].type])
    op.results[0].replace_all_uses_with(result)
    op.erase()
