"""The embedding and the LM head sharded over the vocabulary.

Rank r holds rows [r·V/N, (r+1)·V/N) of the embedding table and of the LM head weight (one
tensor when they are tied). The lookup reads a token's row where this rank holds it and gives
a zero row elsewhere; the all-reduce sums the one real row with zeros, so it is exact. The LM
head computes this rank's slice of the logits and an all-gather along the vocabulary puts the
slices together. A final softcap stays in the projection's epilogue: it acts on each logit
alone, so capping the slices before gathering them gives the same logits for 1/N of the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mlir import ir
from mlir.dialects import arith, linalg, tensor

from tessera.dialects import Lookup, Projection
from tessera.ir_types import ranked_tensor_type, shaped_dims
from tessera.runtime.shard_layout import WeightShard

from .match import producer
from .tp_projections import all_gather_after, all_reduce_after, column_parallel, output_axis
from .tp_signature import ShardedSignature, located

Body = Callable[[Sequence[ir.Value]], ir.Value]


def vocab_slice(
    op: ir.Operation, rows: int | None, name: str, ranks: int, rank: int
) -> tuple[int, int]:
    """(offset, size) of this rank's slice of a vocabulary of ``rows`` (a weight's axis)."""
    if rows is None or rows % ranks:
        raise located(
            f"the vocabulary ({rows} rows of '{name}') is not divisible by ranks={ranks}; "
            "the embedding and the LM head are sharded over it",
            op,
        )
    size = rows // ranks
    return rank * size, size


def _leading(rank: int, dims: int) -> ir.Attribute:
    """The map (d0, ..., d{rank-1}) -> (d0, ..., d{dims-1}): an operand indexed by the
    leading ``dims`` loops (the ids under the rows they select)."""
    results = [ir.AffineDimExpr.get(i) for i in range(dims)]
    return ir.AffineMapAttr.get(ir.AffineMap.get(rank, 0, results))


def _constant(type_: ir.Type, value: int | float) -> ir.Value:
    """``arith.constant value : type_`` (an integer, index or float type)."""
    attr = (
        ir.FloatAttr.get(type_, float(value))
        if isinstance(value, float)
        else ir.IntegerAttr.get(type_, int(value))
    )
    op = ir.Operation.create("arith.constant", results=[type_], attributes={"value": attr})
    return op.results[0]


def _sizes(value: ir.Value) -> list[ir.Value]:
    """The dynamic dims of ``value`` as index values (for a ``tensor.empty`` of its shape)."""
    sizes = []
    for axis, dim in enumerate(shaped_dims(value.type)):
        if dim is None:
            index = _constant(ir.IndexType.get(), axis)
            sizes.append(tensor.dim(value, index))
    return sizes


def _generic(
    inputs: Sequence[ir.Value],
    like: ir.Value,
    element: ir.Type,
    maps: list[ir.Attribute],
    body: Body,
) -> ir.Value:
    """A parallel ``linalg.generic`` over ``like``'s shape with ``element`` results, reading
    ``inputs`` through ``maps`` (the output's map is the identity)."""
    shape = shaped_dims(like.type)
    result = ranked_tensor_type(shape, element)
    empty = ir.Operation.create("tensor.empty", results=[result], operands=_sizes(like))
    parallel = ir.Attribute.parse("#linalg.iterator_type<parallel>")
    generic = linalg.GenericOp(
        [result],
        list(inputs),
        [empty.results[0]],
        ir.ArrayAttr.get([*maps, _leading(len(shape), len(shape))]),
        ir.ArrayAttr.get([parallel] * len(shape)),
    )
    block = generic.regions[0].blocks.append(
        *[ir.ShapedType(v.type).element_type for v in inputs], element
    )
    with ir.InsertionPoint(block):
        linalg.YieldOp([body(list(block.arguments))])
    return generic.results[0]


def _held(token: ir.Value, offset: int, size: int) -> ir.Value:
    """Whether this rank holds ``token``'s row."""
    first = _constant(token.type, offset)
    end = _constant(token.type, offset + size)
    return arith.andi(
        arith.cmpi(arith.CmpIPredicate.sge, token, first),
        arith.cmpi(arith.CmpIPredicate.slt, token, end),
    )


def _local(token: ir.Value, offset: int, size: int) -> ir.Value:
    """``token``'s row among this rank's rows, 0 where another rank holds it (the lookup
    reads a row it has; the masking zeroes it)."""
    held = _held(token, offset, size)
    local = arith.subi(token, _constant(token.type, offset))
    return arith.select(held, local, _constant(token.type, 0))


def shard_lookup(op: ir.Operation, signature: ShardedSignature, ranks: int, rank: int) -> bool:
    """Shards ``tessera.tensor.lookup`` over the vocabulary when its table is a weight
    (False: left whole). The lookup reads this rank's rows with ids clamped into them; a
    ``linalg.generic`` zeroes the rows of tokens another rank holds; an all-reduce sums."""
    view = Lookup(op)
    name = signature.weight_name(view.table)
    if name is None:
        return False
    offset, size = vocab_slice(op, signature.full_shape(view.table)[0], name, ranks, rank)
    ids, rows = view.ids, view.y
    signature.shard(view.table, WeightShard(0, offset, size), op, "table")
    id_rank = len(shaped_dims(ids.type))
    id_type = ir.ShapedType(ids.type).element_type
    with ir.InsertionPoint(op), op.location:
        local = _generic(
            [ids], ids, id_type, [_leading(id_rank, id_rank)], lambda a: _local(a[0], offset, size)
        )
    op.operands[1] = local
    row_type = ir.ShapedType(rows.type).element_type

    def zero_elsewhere(arguments: Sequence[ir.Value]) -> ir.Value:
        held = _held(arguments[1], offset, size)
        return arith.select(held, arguments[0], _constant(row_type, 0.0))

    # The rows' users so far read the masked rows; the masking itself (and the sizes it reads
    # off the rows) must keep reading the lookup.
    readers = [(use.owner.operation, use.operand_number) for use in rows.uses]
    with ir.InsertionPoint.after(op), op.location:
        masked = _generic(
            [rows, ids],
            rows,
            row_type,
            [_leading(id_rank + 1, id_rank + 1), _leading(id_rank + 1, id_rank)],
            zero_elsewhere,
        )
    for reader, index in readers:
        reader.operands[index] = masked
    all_reduce_after(masked, signature, ranks)
    # The clamped ids hide the ids' bound from the range the manifest derives; record it.
    signature.set_range(ids, size * ranks)
    return True


def shard_lm_head(
    function: ir.Operation, signature: ShardedSignature, ranks: int, rank: int
) -> bool:
    """Shards the projection whose result the function returns (the logits) over its output
    features, the vocabulary, followed by an all-gather of the slices; False when the
    function returns no projection of a weight."""
    sharded = False
    terminator = list(function.regions[0].blocks[0].operations)[-1].operation
    for value in list(terminator.operands):
        op = producer(value)
        if op is None or op.name != "tessera.mma.proj":
            continue
        view = Projection(op)
        name = signature.weight_name(view.w)
        if name is None:
            continue
        axis = output_axis(view)
        offset, size = vocab_slice(op, signature.full_shape(view.w)[axis], name, ranks, rank)
        split = column_parallel(op, signature, offset, size)
        all_gather_after(view.y, split, signature, ranks)
        sharded = True
    return sharded
