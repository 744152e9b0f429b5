"""The runtime's plan for an entry function rewritten by ``tessera-cpu-entry-abi``.

The runtime needs to know which argument is an input, a weight, an output or state (memory
that lives across calls, such as a KV cache: a memref the code reads and writes in place),
each one's dtype and symbolic shape, and the range of integer inputs that index memory. The
function's attributes name the arguments (``tessera.input``, ``tessera.weight``,
``tessera.output``, ``tessera.state``; ``tessera.dims`` optionally names dims, and must for
state); the rest is derived from the IR: output dims by MLIR's shape reification, index ranges
by ``index_bounds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, tensor

from tessera.errors import LoweringError
from tessera.ir_walk import walk_ops
from tessera.passes.kv_signature import DIMS_ATTR, read_dims
from tessera.pipeline import run_pipeline
from tessera.runtime.manifest import (
    ArgRef,
    ArtifactError,
    BufferSpec,
    HostCall,
    ProgramSpec,
    SymbolSpec,
    TensorSpec,
)

from .entry_abi import OUTPUT_ATTR, dict_attrs, is_public_definition, located_error, symbol_name
from .index_bounds import derived_range, is_wide_integer

INPUT_ATTR = "tessera.input"
WEIGHT_ATTR = "tessera.weight"
RANGE_ATTR = "tessera.range"
# Memory that lives across calls (a KV cache): a memref argument the caller binds once and the
# code reads and writes in place; the manifest lists it as a `state` buffer.
STATE_ATTR = "tessera.state"

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
    kind: str  # input / weight / output / state
    name: str
    type: ir.ShapedType
    dims: tuple[Dim, ...] | None  # from a `tessera.dims` attribute


def _find_entry(module: ir.Operation, entry: str) -> ir.Operation:
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and symbol_name(op) == entry:
            if not is_public_definition(op):
                raise located_error(f"@{entry} is not a public function with a body", op)
            return op
    raise LoweringError(f"the module has no function @{entry}")


def _attr_dims(attrs: ir.DictAttr, where: str) -> tuple[Dim, ...] | None:
    if DIMS_ATTR not in attrs:
        return None
    try:
        return read_dims(attrs[DIMS_ATTR], where)
    except ValueError as problem:
        raise LoweringError(str(problem)) from None


def _classify(function: ir.Operation, entry: str) -> list[_Arg]:
    signature = ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value)
    if signature.results:
        raise located_error(
            f"@{entry} still returns values; run tessera-cpu-entry-abi before describing it",
            function,
        )
    inputs = list(signature.inputs)
    args = []
    for i, (type_, raw) in enumerate(
        zip(inputs, dict_attrs(function, "arg_attrs", len(inputs)), strict=True)
    ):
        attrs = ir.DictAttr(raw)
        if OUTPUT_ATTR in attrs:
            kind, key = "output", OUTPUT_ATTR
        elif STATE_ATTR in attrs:
            kind, key = "state", STATE_ATTR
        elif WEIGHT_ATTR in attrs:
            kind, key = "weight", WEIGHT_ATTR
        else:
            kind, key = "input", INPUT_ATTR
        name = str(ir.StringAttr(attrs[key]).value) if key in attrs else f"arg{i}"
        memory = kind in ("output", "state")
        expected = ir.MemRefType if memory else ir.RankedTensorType
        if not isinstance(type_, expected):
            raise located_error(
                f"argument #{i} ('{name}') of @{entry} is {type_}; a cpu entry's {kind}s are "
                f"{'memrefs' if memory else 'ranked tensors'}",
                function,
            )
        if kind == "weight" and not type_.has_static_shape:
            raise located_error(
                f"weight '{name}' of @{entry} has a dynamic shape {type_}", function
            )
        args.append(_Arg(i, kind, name, type_, _attr_dims(attrs, f"argument #{i} of @{entry}")))
    return args


def _attr_range(function: ir.Operation, index: int) -> tuple[int, int] | None:
    """An input's ``tessera.range = array<i64: low, high>``: a pass that computes indices
    from the input (a vocabulary shard's lookup) records the bound it can no longer show."""
    count = len(function.regions[0].blocks[0].arguments)
    attrs = ir.DictAttr(dict_attrs(function, "arg_attrs", count)[index])
    if RANGE_ATTR not in attrs:
        return None
    low, high = (int(v) for v in ir.DenseI64ArrayAttr(attrs[RANGE_ATTR]))
    return low, high


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
            sizes = []
            for axis in range(rank):
                # mypy reads the generated ConstantOp; arith.py replaces it with (type, value).
                index = arith.ConstantOp(ir.IndexType.get(), axis)  # type: ignore[call-arg]
                sizes.append(tensor.DimOp(source, index.result).result)
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
        elif arg.kind == "state" and not arg.type.has_static_shape:
            raise LoweringError(
                f"state '{arg.name}' of @{entry} has a dynamic shape {arg.type}; name its "
                f"dims with a {DIMS_ATTR} attribute"
            )
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
    # State symbols (a cache's block count) are bound when the state is bound, not per call.
    for arg in args:
        if arg.kind != "state":
            continue
        for dim in shapes[arg.index]:
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
    buffers: list[BufferSpec] = []
    for arg in args:
        if arg.kind == "state":
            dtype = str(arg.type.element_type)
            buffers.append(BufferSpec(arg.name, "state", dtype, shapes[arg.index]))
            continue
        range_ = (ranges or {}).get(arg.name) or _attr_range(function, arg.index)
        if range_ is None and arg.kind == "input" and is_wide_integer(arg.type):
            range_ = derived_range(arg.name, entry_block.arguments[arg.index], entry)
        dtype = str(arg.type.element_type)
        specs[arg.kind].append(TensorSpec(arg.name, dtype, shapes[arg.index], range_))
    step = HostCall(
        binary,
        packed_symbol(entry),
        tuple(ArgRef("buffer" if a.kind == "state" else a.kind, a.name) for a in args),
    )
    try:
        return ProgramSpec(
            program,
            tuple(symbols.values()),
            tuple(specs["input"]),
            tuple(specs["weight"]),
            tuple(specs["output"]),
            (step,),
            tuple(buffers),
        )
    except ArtifactError as error:
        raise LoweringError(f"the plan of @{entry} is invalid: {error}") from None
