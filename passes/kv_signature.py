"""The arguments of the functions ``tessera-insert-kv-cache`` derives: the attributes that name
them (``tessera.input``, ``tessera.state``, ``tessera.dims``, the cache's group, layer and
window), adding arguments to a function, and reading the cache layout back from them."""

from __future__ import annotations

from collections.abc import Callable

from mlir import ir

from tessera.errors import PassError
from tessera.runtime import kv_layout as names

INPUT_ATTR = "tessera.input"
OUTPUT_ATTR = "tessera.output"
STATE_ATTR = "tessera.state"
DIMS_ATTR = "tessera.dims"
GROUP_ATTR = "tessera.kv_group"
LAYER_ATTR = "tessera.kv_layer"
WINDOW_ATTR = "tessera.kv_window"


def symbol(op: ir.Operation) -> str:
    """The ``sym_name`` of a function."""
    return str(ir.StringAttr(op.attributes["sym_name"]).value)


def arg_attrs(function: ir.Operation) -> list[dict[str, ir.Attribute]]:
    """Each argument's attributes by name (the bindings index a DictAttr, not iterate it)."""
    count = len(function.regions[0].blocks[0].arguments)
    if "arg_attrs" not in function.attributes:
        return [{} for _ in range(count)]
    out = []
    for raw in ir.ArrayAttr(function.attributes["arg_attrs"]):
        entries = ir.DictAttr(raw)
        out.append({entries[i].name: entries[i].attr for i in range(len(entries))})
    return out


def string(attrs: dict[str, ir.Attribute], key: str) -> str | None:
    """A string attribute's value, None when absent."""
    return str(ir.StringAttr(attrs[key]).value) if key in attrs else None


def dims_attr(dims: list[int | str]) -> ir.Attribute:
    """A ``tessera.dims`` value: symbol names and static sizes."""
    return ir.ArrayAttr.get(
        [
            ir.StringAttr.get(d)
            if isinstance(d, str)
            else ir.IntegerAttr.get(ir.IntegerType.get_signless(64), d)
            for d in dims
        ]
    )


def read_dims(attr: ir.Attribute, where: str) -> tuple[int | str, ...]:
    """A ``tessera.dims`` value read back (``dims_attr``'s inverse); a ``ValueError`` names an
    item of ``where``'s that is neither a symbol name nor a size."""
    dims: list[int | str] = []
    for item in ir.ArrayAttr(attr):
        if isinstance(item, ir.StringAttr):
            dims.append(str(item.value))
        elif isinstance(item, ir.IntegerAttr):
            dims.append(int(item.value))
        else:
            raise ValueError(f"{DIMS_ATTR} of {where} holds {item}; expected strings or ints")
    return tuple(dims)


def dictionary(entries: dict[str, ir.Attribute]) -> ir.Attribute:
    return ir.DictAttr.get(entries)


class Signature:
    """Arguments appended to a function: block arguments and their attribute dictionaries."""

    def __init__(self, function: ir.Operation) -> None:
        self.function = function
        self.block = function.regions[0].blocks[0]
        self.attrs = [dictionary(a) for a in arg_attrs(function)]

    def add(self, type_: ir.Type, attrs: dict[str, ir.Attribute]) -> ir.Value:
        argument = self.block.add_argument(type_, self.function.location)
        self.attrs.append(dictionary(attrs))
        return argument

    def finish(self) -> None:
        old = ir.FunctionType(ir.TypeAttr(self.function.attributes["function_type"]).value)
        inputs = [a.type for a in self.block.arguments]
        self.function.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get(inputs, list(old.results))
        )
        self.function.attributes["arg_attrs"] = ir.ArrayAttr.get(self.attrs)


def function_named(module: ir.Operation, name: str) -> ir.Operation | None:
    """The ``func.func`` @``name`` of ``module``, None when it has none."""
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and symbol(op) == name:
            return op
    return None


def refusal(module: ir.Operation, derive: Callable[[ir.Operation], None]) -> str | None:
    """Why ``derive`` refuses ``module`` (its ``PassError``), or None when it applies: it runs
    on a detached copy, so that a target can ask before deriving functions."""
    copy = module.clone(ip=False)
    try:
        derive(copy)
    except PassError as problem:
        return str(problem)
    finally:
        copy.erase()
    return None


def kv_layout_of(module: ir.Operation) -> names.KvLayout:
    """The cache layout of the derived ``@decode`` (block size, groups and their windows, each
    layer's state buffers), read from its arguments' attributes."""
    function = function_named(module, names.DECODE_PROGRAM)
    if function is None:
        raise PassError(f"the module has no @{names.DECODE_PROGRAM} (run tessera-insert-kv-cache)")
    groups: list[names.CacheGroup] = []
    parts: dict[int, dict[str, str]] = {}
    layer_groups: dict[int, str] = {}
    block_sizes: set[int] = set()
    arguments = function.regions[0].blocks[0].arguments
    for argument, attrs in zip(arguments, arg_attrs(function), strict=True):
        table = string(attrs, INPUT_ATTR)
        if table is not None and table.startswith(names.table_input("")):
            window = None
            if WINDOW_ATTR in attrs:
                window = int(ir.IntegerAttr(attrs[WINDOW_ATTR]).value)
            groups.append(names.CacheGroup(table.removeprefix(names.table_input("")), window))
        state = string(attrs, STATE_ATTR)
        if state is None:
            continue
        layer = int(ir.IntegerAttr(attrs[LAYER_ATTR]).value)
        part = "k" if state == names.state_name(layer, "k") else "v"
        parts.setdefault(layer, {})[part] = state
        layer_groups[layer] = str(string(attrs, GROUP_ATTR))
        block_sizes.add(int(ir.MemRefType(argument.type).shape[2]))
    if len(block_sizes) != 1:
        raise PassError(f"@{names.DECODE_PROGRAM}'s caches have block sizes {sorted(block_sizes)}")
    layers = tuple(
        names.CacheLayer(layer, layer_groups[layer], parts[layer]["k"], parts[layer]["v"])
        for layer in sorted(parts)
    )
    return names.KvLayout(block_sizes.pop(), tuple(groups), layers)
