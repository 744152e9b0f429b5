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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, bufferization, cf, func, memref, tensor

from tessera.diagnostics import source_location
from tessera.errors import LoweringError
from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass
from tessera.pipeline import run_pipeline
from tessera.runtime.manifest import (
    ArgRef,
    ArtifactError,
    HostCall,
    ProgramSpec,
    SymbolSpec,
    TensorSpec,
)

OUTPUT_ATTR = "tessera.output"
WRITABLE_ATTR = "bufferization.writable"


def _located(message: str, op: ir.Operation) -> LoweringError:
    return LoweringError(message, source_location(op.location))


def _symbol(op: ir.Operation) -> str:
    return str(ir.StringAttr(op.attributes["sym_name"]).value)


def _is_public_definition(op: ir.Operation) -> bool:
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


def _dict_attrs(op: ir.Operation, key: str, count: int) -> list[ir.Attribute]:
    """The per-argument (or per-result) attribute dictionaries of ``op``, one per position."""
    if key not in op.attributes:
        return [ir.DictAttr.get({}) for _ in range(count)]
    return list(ir.ArrayAttr(op.attributes[key]))


def _read_only(attrs: ir.Attribute) -> ir.Attribute:
    """``attrs`` plus ``bufferization.writable = false``: inputs and weights are the caller's
    tensors (weights are shared by every call), so bufferization must copy before writing."""
    entries = {a.name: a.attr for a in ir.DictAttr(attrs)}
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
        index = arith.ConstantOp(ir.IndexType.get(), axis).result
        computed = tensor.DimOp(value, index).result
        given = memref.DimOp(out, index).result
        same = arith.CmpIOp(arith.CmpIPredicate.eq, computed, given).result
        cf.AssertOp(
            same,
            f"tessera: output '{name}' of @{function}: dim {axis} of the computed result "
            "differs from the size of the buffer the caller passed",
        )


def _rewrite(function: ir.Operation, module: ir.Operation) -> None:
    name = _symbol(function)
    signature = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
    results = list(signature.results)
    for i, type_ in enumerate(results):
        if not isinstance(type_, ir.RankedTensorType) or type_.encoding is not None:
            raise _located(
                f"entry function @{name} returns {type_} (result #{i}); the cpu entry ABI "
                "passes only ranked tensors without encoding",
                function,
            )
    users = _symbol_users(module, name)
    if users:
        raise _located(
            f"entry function @{name} is referenced by '{users[0].name}'; the cpu entry ABI "
            "rewrites entry points only, which nothing in the module may call",
            function,
        )
    inputs = list(signature.inputs)
    arg_attrs = [
        _read_only(attrs) if isinstance(type_, ir.RankedTensorType) else attrs
        for type_, attrs in zip(
            inputs, _dict_attrs(function, "arg_attrs", len(inputs)), strict=True
        )
    ]
    res_attrs = _dict_attrs(function, "res_attrs", len(results))
    entry = function.regions[0].blocks[0]
    outs: list[ir.Value] = []
    names: list[str] = []
    for i, type_ in enumerate(results):
        buffer = ir.MemRefType.get(type_.shape, type_.element_type)
        outs.append(entry.add_argument(buffer, function.location))
        names.append(_output_name(res_attrs[i], i))
        attrs = {a.name: a.attr for a in ir.DictAttr(res_attrs[i])}
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
        if not _is_public_definition(function):
            continue
        signature = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
        if not signature.results:
            continue
        with function.context, function.location:
            _rewrite(function, module)
            function.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()


# --------------------------------------------------------------------------- describing an entry
#
# The runtime needs the rewritten entry's plan: which argument is an input, a weight or an
# output, each one's dtype and symbolic shape, and the range of integer inputs that index
# memory. The function's attributes name the arguments (`tessera.input`, `tessera.weight`,
# `tessera.output`; `tessera.dims` optionally names dims); the rest is derived from the IR.

INPUT_ATTR = "tessera.input"
WEIGHT_ATTR = "tessera.weight"
DIMS_ATTR = "tessera.dims"

# Reifies each output dim in terms of the function's arguments: tessera ops are lowered to
# upstream ones first, since only those implement MLIR's shape reification.
_PROBE_PIPELINE = (
    "builtin.module(tessera-lower-to-cpu, inline, convert-elementwise-to-linalg, canonicalize,"
    " func.func(resolve-ranked-shaped-type-result-dims), canonicalize, cse)"
)
_PROBE_OP = "probe.dims"

Dim = int | str


def packed_symbol(entry: str) -> str:
    """The packed wrapper of ``entry``'s C interface: the symbol a host-call step calls."""
    return f"_mlir__mlir_ciface_{entry}"


@dataclass(frozen=True)
class _Arg:
    index: int
    kind: str  # input / weight / output
    name: str
    type: ir.ShapedType
    dims: tuple[Dim, ...] | None  # from a `tessera.dims` attribute


def _find_entry(module: ir.Operation, entry: str) -> ir.Operation:
    for op in module.regions[0].blocks[0].operations:
        op = op.operation
        if op.name == "func.func" and _symbol(op) == entry:
            if not _is_public_definition(op):
                raise _located(f"@{entry} is not a public function with a body", op)
            return op
    raise LoweringError(f"the module has no function @{entry}")


def _attr_dims(attrs: ir.DictAttr, where: str) -> tuple[Dim, ...] | None:
    if DIMS_ATTR not in attrs:
        return None
    dims: list[Dim] = []
    for item in ir.ArrayAttr(attrs[DIMS_ATTR]):
        if isinstance(item, ir.StringAttr):
            dims.append(str(item.value))
        elif isinstance(item, ir.IntegerAttr):
            dims.append(int(item.value))
        else:
            raise LoweringError(f"{DIMS_ATTR} of {where} holds {item}; expected strings or ints")
    return tuple(dims)


def _classify(function: ir.Operation, entry: str) -> list[_Arg]:
    signature = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
    if signature.results:
        raise _located(
            f"@{entry} still returns values; run tessera-cpu-entry-abi before describing it",
            function,
        )
    inputs = list(signature.inputs)
    args = []
    for i, (type_, raw) in enumerate(
        zip(inputs, _dict_attrs(function, "arg_attrs", len(inputs)), strict=True)
    ):
        attrs = ir.DictAttr(raw)
        if OUTPUT_ATTR in attrs:
            kind, key = "output", OUTPUT_ATTR
        elif WEIGHT_ATTR in attrs:
            kind, key = "weight", WEIGHT_ATTR
        else:
            kind, key = "input", INPUT_ATTR
        name = str(ir.StringAttr(attrs[key]).value) if key in attrs else f"arg{i}"
        expected = ir.MemRefType if kind == "output" else ir.RankedTensorType
        if not isinstance(type_, expected):
            raise _located(
                f"argument #{i} ('{name}') of @{entry} is {type_}; a cpu entry's {kind}s are "
                f"{'memrefs' if kind == 'output' else 'ranked tensors'}",
                function,
            )
        if kind == "weight" and not type_.has_static_shape:
            raise _located(f"weight '{name}' of @{entry} has a dynamic shape {type_}", function)
        args.append(_Arg(i, kind, name, type_, _attr_dims(attrs, f"argument #{i} of @{entry}")))
    return args


def _checked_dims(arg: _Arg, given: Sequence[Dim], entry: str) -> tuple[Dim, ...]:
    if len(given) != arg.type.rank:
        raise LoweringError(
            f"dims {list(given)} of {arg.kind} '{arg.name}' of @{entry} have {len(given)} "
            f"entries; its type {arg.type} has rank {arg.type.rank}"
        )
    for axis, dim in enumerate(given):
        if arg.type.is_dynamic_dim(axis):
            continue
        size = arg.type.get_dim_size(axis)
        if dim != size:
            raise LoweringError(
                f"dim {axis} of {arg.kind} '{arg.name}' of @{entry} is {size} in its type "
                f"{arg.type}, but the dims given say {dim!r}"
            )
    return tuple(given)


def _default_dims(arg: _Arg) -> tuple[Dim, ...]:
    return tuple(
        f"{arg.name}.{axis}" if arg.type.is_dynamic_dim(axis) else arg.type.get_dim_size(axis)
        for axis in range(arg.type.rank)
    )


def _constant_index(value: ir.Value) -> int | None:
    if not isinstance(value, ir.OpResult):
        return None
    op = value.owner.operation
    if op.name != "arith.constant" or not isinstance(op.attributes["value"], ir.IntegerAttr):
        return None
    return int(ir.IntegerAttr(op.attributes["value"]).value)


def _reified_dim(
    value: ir.Value, function: ir.Operation, shapes: Mapping[int, tuple[Dim, ...]]
) -> Dim | None:
    """The manifest dim behind a reified size: a constant, or the input dim it equals."""
    constant = _constant_index(value)
    if constant is not None:
        return constant
    if not isinstance(value, ir.OpResult):
        return None
    op = value.owner.operation
    if op.name not in ("tensor.dim", "memref.dim"):
        return None
    source, index = op.operands
    axis = _constant_index(index)
    if (
        axis is None
        or not isinstance(source, ir.BlockArgument)
        or source.owner.owner.operation != function
        or source.arg_number not in shapes
    ):
        return None
    return shapes[source.arg_number][axis]


def _producer(value: ir.Value) -> str:
    if isinstance(value, ir.OpResult):
        return f"'{value.owner.operation.name}'"
    return "a block argument"


def _infer_output_dims(
    module: ir.Operation, entry: str, pending: list[_Arg], shapes: Mapping[int, tuple[Dim, ...]]
) -> dict[str, tuple[Dim, ...]]:
    """Each pending output's dims as input dims or constants, by reifying the result's shape
    on a copy of the module."""
    clone = module.clone()
    function = _find_entry(clone, entry)
    wanted = {arg.index: arg for arg in pending}
    probed: set[int] = set()
    for op in walk_ops(function):
        if op.name != "bufferization.materialize_in_destination":
            continue
        source, dest = op.operands
        if not isinstance(dest, ir.BlockArgument) or dest.arg_number not in wanted:
            continue
        if dest.arg_number in probed:
            continue
        probed.add(dest.arg_number)
        rank = ir.RankedTensorType(source.type).rank
        with ir.InsertionPoint(op), op.location:
            sizes = [
                tensor.DimOp(source, arith.ConstantOp(ir.IndexType.get(), axis).result).result
                for axis in range(rank)
            ]
            ir.Operation.create(
                _PROBE_OP,
                operands=sizes,
                attributes={
                    "arg": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), dest.arg_number)
                },
            )
    run_pipeline(clone, _PROBE_PIPELINE, verify_each=False)
    function = _find_entry(clone, entry)
    found: dict[str, tuple[Dim, ...]] = {}
    for op in walk_ops(function):
        if op.name != _PROBE_OP:
            continue
        arg = wanted[int(ir.IntegerAttr(op.attributes["arg"]).value)]
        dims = []
        for axis, value in enumerate(op.operands):
            dim = _reified_dim(value, function, shapes)
            if dim is None:
                raise LoweringError(
                    f"dim {axis} of output '{arg.name}' of @{entry} is computed by "
                    f"{_producer(value)}, not "
                    f"equal to an input's dim; give the output's dims explicitly "
                    f"(dims={{'{arg.name}': [...]}} or a {DIMS_ATTR} result attribute)"
                )
            dims.append(dim)
        found[arg.name] = tuple(dims)
    for arg in pending:
        if arg.name not in found:
            raise LoweringError(
                f"output '{arg.name}' of @{entry} is never written by "
                "bufferization.materialize_in_destination"
            )
    return found


# Ops whose result holds exactly the values of their (first) operand, rearranged: an index
# bound on the result is a bound on the operand.
_VALUE_PRESERVING = frozenset(
    {
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.extract_slice",
        "tensor.cast",
        "tensor.reshape",
        "linalg.broadcast",
        "linalg.transpose",
        "tensor.extract",
        "arith.extsi",
    }
)
# Ops with a body whose block argument i is (an element of) operand i.
_ELEMENT_BODIES = frozenset({"linalg.generic", "linalg.map", "tessera.region"})
_TERMINATORS = frozenset({"linalg.yield", "tessera.yield", "scf.yield"})
_SHAPE_QUERIES = frozenset({"tensor.dim", "memref.dim", "tensor.rank", "memref.rank"})


def _is_linalg_named(op: ir.Operation) -> bool:
    """A named linalg op (matmul, broadcast, fill, ...): its body computes on elements and
    indexes nothing with them."""
    return op.name.startswith("linalg.") and op.name not in _ELEMENT_BODIES


def _is_wide_integer(type_: ir.Type) -> bool:
    element = type_.element_type if isinstance(type_, ir.ShapedType) else type_
    if isinstance(element, ir.IndexType):
        return True
    return isinstance(element, ir.IntegerType) and element.width > 1


def _index_sinks(value: ir.Value) -> list[tuple[int | None, ir.Operation]]:
    """Where the values of ``value`` (or values computed from them) index memory, each with
    the exclusive bound the index must respect, or None where no bound on ``value`` follows
    (the index is computed from it, or its target has a dynamic size)."""
    sinks: list[tuple[int | None, ir.Operation]] = []
    work: list[tuple[ir.Value, bool]] = [(value, True)]
    seen: set[tuple[ir.Value, bool]] = set()
    while work:
        current, exact = work.pop()
        if (current, exact) in seen:
            continue
        seen.add((current, exact))
        for use in current.uses:
            op = use.owner.operation
            n = use.operand_number
            if op.name == "tessera.tensor.lookup" and n == 1:
                table = ir.RankedTensorType(op.operands[0].type)
                rows = None if table.is_dynamic_dim(0) else table.get_dim_size(0)
                sinks.append((rows if exact else None, op))
            elif op.name in _SHAPE_QUERIES:
                continue  # yields the tensor's sizes, not its values
            elif op.name in ("arith.index_cast", "arith.index_castui"):
                sinks += _cast_sinks(op.results[0], exact)
            elif op.name in ("func.call", "func.call_indirect"):
                sinks.append((None, op))
            elif op.name in _TERMINATORS:
                parent = op.parent.operation
                work += [(r, False) for r in parent.results if _is_wide_integer(r.type)]
            elif op.regions and op.name not in _ELEMENT_BODIES and not _is_linalg_named(op):
                sinks.append((None, op))  # a loop or branch: where the values go is unknown
            else:
                body = op.regions[0].blocks[0].arguments if op.name in _ELEMENT_BODIES else []
                if n < len(body):
                    work.append((body[n], exact))
                keeps = exact and op.name in _VALUE_PRESERVING and n == 0
                work += [(r, keeps) for r in op.results if _is_wide_integer(r.type)]
    return sinks


def _cast_sinks(index: ir.Value, exact: bool) -> list[tuple[int | None, ir.Operation]]:
    sinks: list[tuple[int | None, ir.Operation]] = []
    for use in index.uses:
        op = use.owner.operation
        n = use.operand_number
        if op.name in ("tensor.extract", "memref.load") and n >= 1 and exact:
            target = ir.ShapedType(op.operands[0].type)
            axis = n - 1
            sinks.append((None if target.is_dynamic_dim(axis) else target.get_dim_size(axis), op))
        else:
            sinks.append((None, op))
    return sinks


def _derived_range(arg: _Arg, value: ir.Value, entry: str) -> tuple[int, int] | None:
    sinks = _index_sinks(value)
    if not sinks:
        return None
    for bound, op in sinks:
        if bound is None:
            where = source_location(op.location)
            raise LoweringError(
                f"input '{arg.name}' of @{entry} indexes memory through '{op.name}'"
                f"{f' at {where}' if where else ''}, and no bound on its values follows from "
                f"the IR; give its valid range: ranges={{'{arg.name}': (low, high)}}"
            )
    return (0, min(bound for bound, _ in sinks if bound is not None))


def describe_entry(
    module: ir.Module,
    entry: str = "forward",
    program: str = "prefill",
    *,
    binary: str = "model",
    dims: Mapping[str, Sequence[Dim]] | None = None,
    bounds: Mapping[str, tuple[int, int | None]] | None = None,
    ranges: Mapping[str, tuple[int, int]] | None = None,
) -> ProgramSpec:
    """The runtime's plan for ``@entry`` (already rewritten by tessera-cpu-entry-abi, not yet
    lowered): one host call of its packed C interface in ``binary``.

    ``dims`` names the dims of inputs and outputs (``{"input_ids": ["B", "S"]}``); without it,
    a ``tessera.dims`` argument attribute does, and dynamic input dims are otherwise called
    ``<input>.<axis>``. Output dims not given are derived from the IR, as input dims or
    constants. ``bounds`` limits symbols (default ``[1, unbounded]``). ``ranges`` gives
    ``[low, high)`` of integer inputs; an input that indexes memory (token ids) gets its range
    from the indexed table's size, and one whose bound cannot be derived is an error, since
    the runtime must reject out-of-range values before the compiled code reads with them."""
    function = _find_entry(module.operation, entry)
    args = _classify(function, entry)
    names = {arg.name for arg in args if arg.kind != "weight"}
    for table, what in ((dims or {}, "dims"), (ranges or {}, "ranges")):
        unknown = sorted(set(table) - names)
        if unknown:
            raise LoweringError(
                f"{what} names {', '.join(unknown)}, which are not inputs or outputs of @{entry} "
                f"({', '.join(sorted(names))})"
            )
    shapes: dict[int, tuple[Dim, ...]] = {}
    pending: list[_Arg] = []
    for arg in args:
        given = (dims or {}).get(arg.name, arg.dims)
        if given is not None:
            shapes[arg.index] = _checked_dims(arg, given, entry)
        elif arg.kind == "output" and not arg.type.has_static_shape:
            pending.append(arg)
        else:
            shapes[arg.index] = _default_dims(arg)
    input_shapes = {a.index: shapes[a.index] for a in args if a.kind == "input"}
    if pending:
        inferred = _infer_output_dims(module.operation, entry, pending, input_shapes)
        for arg in pending:
            shapes[arg.index] = inferred[arg.name]
    symbols: dict[str, SymbolSpec] = {}
    limits = dict(bounds or {})
    for index in input_shapes:
        for dim in shapes[index]:
            if isinstance(dim, str) and dim not in symbols:
                low, high = limits.pop(dim, (1, None))
                symbols[dim] = SymbolSpec(dim, low, high)
    if limits:
        raise LoweringError(
            f"bounds name {', '.join(sorted(limits))}, which are not symbols of @{entry}'s "
            f"inputs ({', '.join(symbols) or 'none'})"
        )
    entry_block = function.regions[0].blocks[0]
    specs: dict[str, list[TensorSpec]] = {"input": [], "weight": [], "output": []}
    for arg in args:
        range_ = (ranges or {}).get(arg.name)
        if range_ is None and arg.kind == "input" and _is_wide_integer(arg.type):
            range_ = _derived_range(arg, entry_block.arguments[arg.index], entry)
        dtype = str(arg.type.element_type)
        specs[arg.kind].append(TensorSpec(arg.name, dtype, shapes[arg.index], range_))
    step = HostCall(binary, packed_symbol(entry), tuple(ArgRef(a.kind, a.name) for a in args))
    try:
        return ProgramSpec(
            program,
            tuple(symbols.values()),
            tuple(specs["input"]),
            tuple(specs["weight"]),
            tuple(specs["output"]),
            (step,),
        )
    except ArtifactError as error:
        raise LoweringError(f"the plan of @{entry} is invalid: {error}") from None
