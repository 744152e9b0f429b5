"""Megatron's two projections and the collectives that join them.

Column parallel: a rank computes a slice of the output features, from the same slice of the
weight's output rows (and of the bias); nothing is exchanged. Row parallel: a rank contracts
its slice of the input features with the same slice of the weight's input columns, leaving a
partial sum that an all-reduce completes. A block half (attention, the MLP) is column then
row parallel, so it costs one all-reduce.
"""

from __future__ import annotations

from mlir import ir

from tessera.dialects import AllGather, AllReduce, Projection
from tessera.ir_types import ranked_tensor_type, shaped_dims
from tessera.runtime.shard_layout import WeightShard

from .match import producer
from .tp_propagate import Split, retype
from .tp_signature import ShardedSignature, located


def output_axis(projection: Projection) -> int:
    """The weight's axis of output features: rows of a torch Linear weight [N, K]."""
    return 0 if projection.transpose_w else 1


def column_parallel(op: ir.Operation, signature: ShardedSignature, offset: int, size: int) -> Split:
    """Makes projection ``op`` compute output features [offset, offset + size); returns the
    split of its result (already retyped)."""
    view = Projection(op)
    signature.shard(view.w, WeightShard(output_axis(view), offset, size), op, "weight")
    if view.bias is not None:
        signature.shard(view.bias, WeightShard(0, offset, size), op, "bias")
    split = Split(len(shaped_dims(view.y.type)) - 1, offset, size)
    retype(view.y, split)
    return split


def row_parallel(op: ir.Operation, signature: ShardedSignature, split: Split, ranks: int) -> None:
    """Makes projection ``op`` (whose x holds ``split`` of its last axis) contract only those
    input features, and completes its result with an all-reduce."""
    view = Projection(op)
    if view.bias is not None:
        # Every rank would add it to its partial sum: the reduced result would hold it N times.
        raise located(
            "a row-parallel projection with a bias is not supported (the bias would be added "
            "once per rank)",
            op,
        )
    axis = 1 - output_axis(view)
    signature.shard(view.w, WeightShard(axis, split.offset, split.size), op, "weight")
    all_reduce_after(view.y, signature, ranks)


def all_reduce_after(value: ir.Value, signature: ShardedSignature, ranks: int) -> ir.Value:
    """Sums ``value`` (each rank's partial) over the ranks right after its producer; every
    former user of ``value`` reads the sum."""
    origin = producer(value)
    assert origin is not None, "partial sums are op results"
    with ir.InsertionPoint.after(origin), origin.location:
        reduce = AllReduce.build(
            [value, signature.communicator()], [value.type], loc=origin.location, ranks=ranks
        )
    value.replace_all_uses_except(reduce.y, reduce.op)
    return reduce.y


def all_gather_after(
    value: ir.Value, split: Split, signature: ShardedSignature, ranks: int
) -> ir.Value:
    """Concatenates the ranks' slices ``value`` (holding ``split``, each rank an equal slice in
    rank order) into the full tensor; every former user of ``value`` reads it."""
    origin = producer(value)
    if origin is None:
        raise ValueError("all_gather_after gathers op results")
    shape = shaped_dims(value.type)
    shape[split.axis] = split.size * ranks
    full = ranked_tensor_type(shape, ir.ShapedType(value.type).element_type)
    with ir.InsertionPoint.after(origin), origin.location:
        gather = AllGather.build(
            [value, signature.communicator()],
            [full],
            loc=origin.location,
            axis=split.axis,
            ranks=ranks,
        )
    value.replace_all_uses_except(gather.y, gather.op)
    return gather.y
