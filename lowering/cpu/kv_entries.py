"""tessera-cpu-share-kv-body: ``@prefill_kv`` and ``@decode`` become thin entries over one
shared body.

``tessera-insert-kv-cache`` derives the two functions from the forward function; they differ
only in the types of their token and position inputs ([B, S] against [B, 1]), and every CPU
kernel takes any S, so their code would be the same. Each entry function costs seconds of
LLVM time (every kernel wrapper is inlined into it), so the CPU target compiles the body once,
as the private ``@tessera_kv_step`` (kept out of line: ``no_inline`` calls, LLVM's
``noinline``), and each entry casts its inputs to the body's types and calls it.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import func, tensor

from tessera.errors import PassError
from tessera.pass_registry import NoOptions, register_pass
from tessera.runtime import kv_layout

from .entry_abi import symbol_name

SHARED_BODY = "tessera_kv_step"


def _function(module: ir.Operation, name: str) -> ir.Operation:
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and symbol_name(op) == name:
            return op
    raise PassError(f"tessera-cpu-share-kv-body: the module has no @{name}")


def _signature(function: ir.Operation) -> ir.FunctionType:
    return ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)


def _call_body(entry: ir.Operation, body: ir.Operation) -> None:
    """Replaces ``entry``'s body by a call of ``body`` on its (cast) arguments."""
    block = entry.regions[0].blocks[0]
    for op in reversed([o.operation for o in block.operations]):
        op.erase()
    wanted = _signature(body)
    with ir.InsertionPoint(block), entry.location:
        operands = []
        for argument, type_ in zip(block.arguments, wanted.inputs, strict=True):
            value: ir.Value = argument
            if str(argument.type) != str(type_):
                value = tensor.CastOp(type_, argument).result
            operands.append(value)
        call = func.CallOp(list(wanted.results), ir.FlatSymbolRefAttr.get(SHARED_BODY), operands)
        call.operation.attributes["no_inline"] = ir.UnitAttr.get()
        results = []
        for value, type_ in zip(call.results, _signature(entry).results, strict=True):
            same = str(value.type) == str(type_)
            results.append(value if same else tensor.CastOp(type_, value).result)
        func.ReturnOp(results)


@register_pass("tessera-cpu-share-kv-body")
def share_kv_body(module: ir.Operation, options: NoOptions) -> None:
    """Compile @prefill_kv and @decode (from tessera-insert-kv-cache) as thin entries that
    cast their inputs and call one shared private body, @tessera_kv_step, kept out of line."""
    prefill = _function(module, kv_layout.PREFILL_PROGRAM)
    decode = _function(module, kv_layout.DECODE_PROGRAM)
    if len(_signature(prefill).results) != len(_signature(decode).results):
        raise PassError(
            f"tessera-cpu-share-kv-body: @{kv_layout.PREFILL_PROGRAM} and "
            f"@{kv_layout.DECODE_PROGRAM} return different values"
        )
    with module.context, prefill.location:
        body = prefill.clone(ip=ir.InsertionPoint(module.regions[0].blocks[0]))
        body.attributes["sym_name"] = ir.StringAttr.get(SHARED_BODY)
        body.attributes["sym_visibility"] = ir.StringAttr.get("private")
        body.attributes["passthrough"] = ir.ArrayAttr.get([ir.StringAttr.get("noinline")])
        for key in ("arg_attrs", "res_attrs"):
            if key in body.attributes:
                del body.attributes[key]
        for entry in (prefill, decode):
            if len(_signature(entry).inputs) != len(_signature(body).inputs):
                raise PassError(
                    f"tessera-cpu-share-kv-body: @{symbol_name(entry)} takes "
                    f"{len(_signature(entry).inputs)} arguments, the shared body "
                    f"{len(_signature(body).inputs)}"
                )
            _call_body(entry, body)
