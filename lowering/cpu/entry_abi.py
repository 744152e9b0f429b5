"""tessera-cpu-entry-abi: entry functions write their results into buffers the caller owns.

A tensor-level entry function returns new tensors; once bufferized, those would be buffers the
compiled code allocates and the caller must free with the same allocator. The runtime instead
allocates every output itself (with torch) and passes it in, so each tensor result becomes a
trailing ``memref`` argument written through

    bufferization.materialize_in_destination %r in restrict writable %out

and the function returns nothing. One-shot bufferization then writes the result into the
caller's buffer (in place, or with one ``memref.copy``), and ``llvm.emit_c_interface`` gives the
function MLIR's C wrapper ``_mlir_ciface_<name>(desc* in0, ..., desc* out0)`` with its packed
form ``_mlir__mlir_ciface_<name>(void** args)``, the one the runtime calls.

Tensor arguments (inputs, weights) become ``bufferization.writable = false``: they belong to the
caller, and weights serve every call. The runtime sizes each output from the manifest; a
``cf.assert`` per dynamic dim checks that the buffer it passed has the size the code computed
(the process aborts with the message rather than write out of bounds if they ever disagree).
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, bufferization, cf, func, memref, tensor

from tessera.diagnostics import source_location
from tessera.errors import LoweringError
from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

OUTPUT_ATTR = "tessera.output"
WRITABLE_ATTR = "bufferization.writable"


def located_error(message: str, op: ir.Operation) -> LoweringError:
    """A ``LoweringError`` at ``op``'s source location."""
    return LoweringError(message, source_location(op.location))


def symbol_name(op: ir.Operation) -> str:
    """The ``sym_name`` of a symbol op such as a ``func.func``."""
    return str(ir.StringAttr(op.attributes["sym_name"]).value)


def is_public_definition(op: ir.Operation) -> bool:
    """A ``func.func`` with a body and public visibility: an entry point of the module."""
    if op.name != "func.func" or not op.regions[0].blocks:
        return False
    if "sym_visibility" not in op.attributes:
        return True
    return str(ir.StringAttr(op.attributes["sym_visibility"]).value) == "public"


def _symbol_users(module: ir.Operation, name: str) -> list[ir.Operation]:
    """Ops other than the definition that reference ``@name`` through an attribute."""
    users = []
    for op in walk_ops(module):
        for _, attr in op.attributes.items():
            if isinstance(attr, ir.FlatSymbolRefAttr) and attr.value == name:
                users.append(op)
                break
    return users


def dict_attrs(op: ir.Operation, key: str, count: int) -> list[ir.Attribute]:
    """The per-argument (or per-result) attribute dictionaries of ``op``, one per position."""
    if key not in op.attributes:
        return [ir.DictAttr.get({}) for _ in range(count)]
    return list(ir.ArrayAttr(op.attributes[key]))


def _entries(attrs: ir.Attribute) -> dict[str, ir.Attribute]:
    """The entries of a dictionary attribute by name. (The bindings iterate a DictAttr by
    index; their stubs declare no ``__iter__``, so it is indexed here.)"""
    dictionary = ir.DictAttr(attrs)
    return {dictionary[i].name: dictionary[i].attr for i in range(len(dictionary))}


def _read_only(attrs: ir.Attribute) -> ir.Attribute:
    """``attrs`` plus ``bufferization.writable = false``: inputs and weights are the caller's
    tensors (weights are shared by every call), so bufferization must copy before writing."""
    entries = _entries(attrs)
    entries[WRITABLE_ATTR] = ir.BoolAttr.get(False)
    return ir.DictAttr.get(entries)


def _output_name(result_attrs: ir.Attribute, index: int) -> str:
    entries = ir.DictAttr(result_attrs)
    if OUTPUT_ATTR in entries:
        return str(ir.StringAttr(entries[OUTPUT_ATTR]).value)
    return f"output{index}"


def _check_dims(value: ir.Value, out: ir.Value, name: str, function: str) -> None:
    """``cf.assert`` that every dynamic dim of ``value`` equals that of the buffer ``out``."""
    value_type = ir.RankedTensorType(value.type)
    for axis in range(value_type.rank):
        if not value_type.is_dynamic_dim(axis):
            continue
        # mypy reads the generated ConstantOp; arith.py replaces it with one taking (type, value).
        index = arith.ConstantOp(ir.IndexType.get(), axis).result  # type: ignore[call-arg]
        computed = tensor.DimOp(value, index).result
        given = memref.DimOp(out, index).result
        same = arith.CmpIOp(arith.CmpIPredicate.eq, computed, given).result
        cf.AssertOp(
            same,
            f"tessera: output '{name}' of @{function}: dim {axis} of the computed result "
            "differs from the size of the buffer the caller passed",
        )


def _rewrite(function: ir.Operation, module: ir.Operation) -> None:
    name = symbol_name(function)
    signature = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
    results = list(signature.results)
    for i, type_ in enumerate(results):
        if not isinstance(type_, ir.RankedTensorType) or type_.encoding is not None:
            raise located_error(
                f"entry function @{name} returns {type_} (result #{i}); the cpu entry ABI "
                "passes only ranked tensors without encoding",
                function,
            )
    users = _symbol_users(module, name)
    if users:
        raise located_error(
            f"entry function @{name} is referenced by '{users[0].name}'; the cpu entry ABI "
            "rewrites entry points only, which nothing in the module may call",
            function,
        )
    inputs = list(signature.inputs)
    arg_attrs = [
        _read_only(attrs) if isinstance(type_, ir.RankedTensorType) else attrs
        for type_, attrs in zip(inputs, dict_attrs(function, "arg_attrs", len(inputs)), strict=True)
    ]
    res_attrs = dict_attrs(function, "res_attrs", len(results))
    entry = function.regions[0].blocks[0]
    outs: list[ir.Value] = []
    names: list[str] = []
    for i, type_ in enumerate(results):
        buffer = ir.MemRefType.get(type_.shape, type_.element_type)
        outs.append(entry.add_argument(buffer, function.location))
        names.append(_output_name(res_attrs[i], i))
        attrs = _entries(res_attrs[i])
        attrs[OUTPUT_ATTR] = ir.StringAttr.get(names[-1])
        arg_attrs.append(ir.DictAttr.get(attrs))
    returns = [
        op.operation
        for block in function.regions[0].blocks
        for op in block.operations
        if op.operation.name == "func.return"
    ]
    for ret in returns:
        with ir.InsertionPoint(ret), ret.location:
            for value, out, output in zip(ret.operands, outs, names, strict=True):
                _check_dims(value, out, output, name)
                bufferization.MaterializeInDestinationOp(
                    None, value, out, restrict=True, writable=True
                )
            func.ReturnOp([])
        ret.erase()
    function.attributes["function_type"] = ir.TypeAttr.get(
        ir.FunctionType.get([*inputs, *(o.type for o in outs)], [])
    )
    function.attributes["arg_attrs"] = ir.ArrayAttr.get(arg_attrs)
    if "res_attrs" in function.attributes:
        del function.attributes["res_attrs"]


@register_pass("tessera-cpu-entry-abi")
def lower_entry_abi(module: ir.Operation, options: NoOptions) -> None:
    """Make each public function write its tensor results into trailing memref arguments
    (`bufferization.materialize_in_destination ... in restrict writable`) and return
    nothing, so the caller allocates every output; mark it `llvm.emit_c_interface`."""
    functions = [op.operation for op in module.regions[0].blocks[0].operations]
    for function in functions:
        if not is_public_definition(function):
            continue
        signature = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
        if not signature.results:
            continue
        with function.context, function.location:
            _rewrite(function, module)
            function.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
