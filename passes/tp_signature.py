"""The arguments of a function sharded for tensor parallelism: weights that become slices,
and the communicator the collectives take.

A sharded weight keeps its name (``tessera.weight``), takes the slice's type, and records the
slice as ``tessera.shard = {axis, offset, size}``, which the compiled artifact's manifest
passes on (``runtime/collectives.py``) so that binding the full state dict on a rank picks its
slice. The module records the ranks and this rank as ``tessera.tensor_parallel``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import PassError
from tessera.ir_types import ranked_tensor_type, shaped_dims
from tessera.runtime.shard_layout import COMMUNICATOR, ShardLayout, WeightShard

WEIGHT_ATTR = "tessera.weight"
SHARD_ATTR = "tessera.shard"
RANGE_ATTR = "tessera.range"
MODULE_ATTR = "tessera.tensor_parallel"


def located(message: str, op: ir.Operation) -> PassError:
    return PassError(f"tessera-shard-tensor-parallel: {message}", source_location(op.location))


def _i64(value: int) -> ir.Attribute:
    return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), value)


def _describe(shard: WeightShard) -> str:
    return f"[{shard.offset}, {shard.offset + shard.size}) of axis {shard.axis}"


@dataclass
class _Sharded:
    """A weight argument given a slice, and the ops that asked for it."""

    shard: WeightShard
    requested_by: list[ir.Operation]


class ShardedSignature:
    """Edits one function's arguments; ``finish`` writes its type and argument attributes."""

    def __init__(self, function: ir.Operation) -> None:
        self.function = function
        self.block = function.regions[0].blocks[0]
        count = len(self.block.arguments)
        raw = (
            list(ir.ArrayAttr(function.attributes["arg_attrs"]))
            if "arg_attrs" in function.attributes
            else [ir.DictAttr.get({}) for _ in range(count)]
        )
        self.attrs: list[dict[str, ir.Attribute]] = []
        for item in raw:
            dictionary = ir.DictAttr(item)
            self.attrs.append(
                {dictionary[i].name: dictionary[i].attr for i in range(len(dictionary))}
            )
        self._sharded: dict[int, _Sharded] = {}
        self._communicator: ir.Value | None = None
        # Argument shapes before any slicing: a weight shared by two ops (tied embedding and
        # LM head) is already a slice when the second one asks for it.
        self._full = [shaped_dims(a.type) for a in self.block.arguments]

    def weight_name(self, value: ir.Value) -> str | None:
        """The state-dict name of ``value`` when it is one of the function's weights."""
        if not isinstance(value, ir.BlockArgument) or value.owner != self.block:
            return None
        attrs = self.attrs[value.arg_number]
        return str(ir.StringAttr(attrs[WEIGHT_ATTR]).value) if WEIGHT_ATTR in attrs else None

    def full_shape(self, value: ir.Value) -> list[int | None]:
        """The shape of ``value`` before this pass sliced it (its current one if not an
        argument of the function)."""
        if isinstance(value, ir.BlockArgument) and value.owner == self.block:
            if value.arg_number < len(self._full):
                return list(self._full[value.arg_number])
        return shaped_dims(value.type)

    def shard(self, value: ir.Value, shard: WeightShard, op: ir.Operation, what: str) -> None:
        """Makes weight ``value`` (an operand of ``op``, its ``what``) the slice ``shard``. A
        weight shared by several ops (an embedding tied to the LM head) must be asked for the
        same slice by each of them."""
        name = self.weight_name(value)
        if name is None:
            raise located(
                f"the {what} of '{op.name}' must be a weight (a function argument with "
                f"{WEIGHT_ATTR}) to be sharded",
                op,
            )
        assert isinstance(value, ir.BlockArgument), "weight_name accepts block arguments only"
        index = value.arg_number
        found = self._sharded.get(index)
        if found is not None:
            if found.shard != shard:
                raise located(
                    f"weight '{name}' is asked for two different slices: "
                    f"{_describe(found.shard)} by '{found.requested_by[0].name}' and "
                    f"{_describe(shard)} by '{op.name}'",
                    op,
                )
            found.requested_by.append(op)
            return
        shape = self.full_shape(value)
        if not 0 <= shard.axis < len(shape) or shape[shard.axis] is None:
            raise located(f"weight '{name}' {value.type} has no static axis {shard.axis}", op)
        full = shape[shard.axis]
        assert full is not None
        if shard.offset + shard.size > full:
            raise located(
                f"weight '{name}' has {full} rows on axis {shard.axis}, fewer than the slice "
                f"[{shard.offset}, {shard.offset + shard.size})",
                op,
            )
        shape[shard.axis] = shard.size
        element = ir.ShapedType(value.type).element_type
        value.set_type(ranked_tensor_type(shape, element))
        self.attrs[index][SHARD_ATTR] = ir.DictAttr.get(
            {"axis": _i64(shard.axis), "offset": _i64(shard.offset), "size": _i64(shard.size)}
        )
        self._sharded[index] = _Sharded(shard, [op])

    def set_range(self, value: ir.Value, high: int) -> bool:
        """Records [0, high) as the valid values of input ``value`` (token ids that a vocab
        shard's arithmetic hides from the range the manifest would derive); False when
        ``value`` is not an argument of the function."""
        if not isinstance(value, ir.BlockArgument) or value.owner != self.block:
            return False
        self.attrs[value.arg_number][RANGE_ATTR] = ir.DenseI64ArrayAttr.get([0, high])
        return True

    def communicator(self) -> ir.Value:
        """The communicator argument (added on first use)."""
        if self._communicator is None:
            i64 = ir.IntegerType.get_signless(64)
            self._communicator = self.block.add_argument(
                ranked_tensor_type([1], i64), self.function.location
            )
            self.attrs.append({WEIGHT_ATTR: ir.StringAttr.get(COMMUNICATOR)})
        return self._communicator

    def check_uses(self) -> None:
        """Every use of a sharded weight is by an op that asked for its slice: any other
        would read the slice as if it were the whole weight."""
        for index, sharded in self._sharded.items():
            argument = self.block.arguments[index]
            for use in argument.uses:
                user = use.owner.operation
                if not any(user == op for op in sharded.requested_by):
                    name = self.weight_name(argument)
                    raise located(
                        f"weight '{name}' is sharded for '{sharded.requested_by[0].name}' but "
                        f"also used whole by '{user.name}', which cannot take its slice",
                        user,
                    )

    def finish(self) -> None:
        old = ir.FunctionType(ir.TypeAttr(self.function.attributes["function_type"]).value)
        inputs = [argument.type for argument in self.block.arguments]
        self.function.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get(inputs, list(old.results))
        )
        self.function.attributes["arg_attrs"] = ir.ArrayAttr.get(
            [ir.DictAttr.get(attrs) for attrs in self.attrs]
        )


def mark_module(module: ir.Operation, ranks: int, rank: int) -> None:
    module.attributes[MODULE_ATTR] = ir.DictAttr.get({"ranks": _i64(ranks), "rank": _i64(rank)})


def shard_layout(module: ir.Operation) -> ShardLayout | None:
    """The ranks, this rank and every weight's slice, read back from a module the pass
    sharded; None for a module it did not shard."""
    if MODULE_ATTR not in module.attributes:
        return None
    marks = ir.DictAttr(module.attributes[MODULE_ATTR])
    ranks = int(ir.IntegerAttr(marks["ranks"]).value)
    rank = int(ir.IntegerAttr(marks["rank"]).value)
    shards: dict[str, WeightShard] = {}
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name != "func.func" or "arg_attrs" not in op.attributes:
            continue
        for raw in ir.ArrayAttr(op.attributes["arg_attrs"]):
            attrs = ir.DictAttr(raw)
            if SHARD_ATTR not in attrs or WEIGHT_ATTR not in attrs:
                continue
            entry = ir.DictAttr(attrs[SHARD_ATTR])
            shards[str(ir.StringAttr(attrs[WEIGHT_ATTR]).value)] = WeightShard(
                *(int(ir.IntegerAttr(entry[key]).value) for key in ("axis", "offset", "size"))
            )
    return ShardLayout(ranks, rank, shards)
