"""Carrying a split (one axis holding a slice of its full size) from a column-parallel
projection through the ops that only rearrange heads, to the ops that consume it.

A column-parallel projection computes a slice of its output features: q, k or v for some of
the heads. The reshapes, transposes, rope, per-head norms (Gemma 3's QK-norm) and casts that
follow keep working head by head, so each only needs its result type (and, for
``tensor.expand_shape``, its static output shape) to say how many heads it now holds.
Attention keeps the split on its heads. The walk ends at a projection that reads the split
axis as its contraction (the row-parallel output projection), which the caller shards, and at
attention's k and v. Any other user is refused, naming it: it would read a slice as the whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from mlir import ir

from tessera.ir_types import ranked_tensor_type, shaped_dims

from .match import i64_array_attr, producer, reassociation
from .tp_signature import located


@dataclass(frozen=True)
class Split:
    """A value that holds ``[offset, offset + size)`` of its full version's ``axis``."""

    axis: int
    offset: int
    size: int


# Called at a projection whose contraction axis is split: (projection, split of its x).
RowParallel = Callable[[ir.Operation, Split], None]

# Ops that act on each element (or each head) alone: the split passes through unchanged.
_CASTS = frozenset({"arith.extf", "arith.truncf"})


def retype(value: ir.Value, split: Split) -> None:
    """Gives ``value`` the type of its slice."""
    shape = shaped_dims(value.type)
    shape[split.axis] = split.size
    value.set_type(ranked_tensor_type(shape, ir.ShapedType(value.type).element_type))


def _static(op: ir.Operation, dims: list[int | None], what: str) -> list[int]:
    if any(d is None for d in dims):
        raise located(f"{what} of '{op.name}' must be static to split it over the ranks", op)
    return [d for d in dims if d is not None]


def _through_expand(op: ir.Operation, split: Split) -> Split:
    """``tensor.expand_shape`` [.., H·D, ..] → [.., H, D, ..]: the slice of H·D becomes a
    slice of whole heads, and the static output shape holds the new head count."""
    group = reassociation(op)[split.axis]
    out = shaped_dims(op.results[0].type)
    inner = math.prod(_static(op, [out[d] for d in group[1:]], "the inner dims of the split"))
    if split.offset % inner or split.size % inner:
        raise located(
            f"the slice [{split.offset}, {split.offset + split.size}) of axis {split.axis} "
            f"does not split into whole groups of {inner} (the dims after the first of "
            f"{[out[d] for d in group]})",
            op,
        )
    static = i64_array_attr(op, "static_output_shape")
    if static is None or out[group[0]] is None:
        raise located("the split axis must have a static size in the output shape", op)
    moved = Split(group[0], split.offset // inner, split.size // inner)
    static[group[0]] = moved.size
    op.attributes["static_output_shape"] = ir.DenseI64ArrayAttr.get(static)
    return moved


def _through_collapse(op: ir.Operation, split: Split) -> Split:
    """``tensor.collapse_shape`` [.., H, D, ..] → [.., H·D, ..]: the split must be the
    outermost dim of its group (unit dims aside), so the merged slice stays contiguous."""
    groups = reassociation(op)
    index = next(i for i, group in enumerate(groups) if split.axis in group)
    group = groups[index]
    source = shaped_dims(op.operands[0].type)
    before = [source[d] for d in group if d < split.axis]
    if any(d != 1 for d in before):
        raise located(
            f"collapsing dims {group} would interleave the ranks' slices of axis "
            f"{split.axis} (only unit dims may precede it in its group)",
            op,
        )
    inner = math.prod(_static(op, [source[d] for d in group if d > split.axis], "the dims"))
    return Split(index, split.offset * inner, split.size * inner)


def _through_transpose(op: ir.Operation, split: Split) -> Split:
    """``linalg.transpose``: the split moves with its axis; the destination is a fresh
    ``tensor.empty`` of the new type (the old one may be shared with an unsplit transpose)."""
    permutation = i64_array_attr(op, "permutation")
    assert permutation is not None, "linalg.transpose has a permutation"
    moved = replace(split, axis=permutation.index(split.axis))
    init = producer(op.operands[1])
    if init is None or init.name != "tensor.empty":
        raise located("the destination of a split transpose must be a tensor.empty", op)
    shape = shaped_dims(op.results[0].type)
    shape[moved.axis] = moved.size
    element = ir.ShapedType(op.results[0].type).element_type
    # The split axis is static, so the dynamic sizes (the operands) stay those of the old.
    with ir.InsertionPoint(op), op.location:
        fresh = ir.Operation.create(
            "tensor.empty",
            results=[ranked_tensor_type(shape, element)],
            operands=list(init.operands),
        )
    op.operands[1] = fresh.results[0]
    return moved


def _per_head(op: ir.Operation, split: Split, what: str) -> Split:
    """An op that computes within the last axis (rope, rms norm): the split must be another."""
    rank = len(shaped_dims(op.operands[0].type))
    if split.axis == rank - 1:
        raise located(f"{what} works along the last axis, which is split over the ranks", op)
    return split


def propagate(start: ir.Value, split: Split, row_parallel: RowParallel, origin: str) -> None:
    """Retypes ``start`` (the result of a column-parallel projection) and every value that
    rearranges it, calling ``row_parallel`` at each projection that contracts the split.
    ``origin`` says where the split came from, for errors."""
    work: list[tuple[ir.Value, Split]] = [(start, split)]
    while work:
        value, current = work.pop()
        retype(value, current)
        for use in list(value.uses):
            op = use.owner.operation
            n = use.operand_number
            follow = _step(op, n, current, row_parallel, origin)
            if follow is not None:
                work.append((op.results[0], follow))


def _step(
    op: ir.Operation, n: int, split: Split, row_parallel: RowParallel, origin: str
) -> Split | None:
    """The split of ``op``'s result when its operand ``n`` carries ``split`` (None: the walk
    stops at ``op``)."""
    name = op.name
    if name == "tensor.expand_shape" and n == 0:
        return _through_expand(op, split)
    if name == "tensor.collapse_shape" and n == 0:
        return _through_collapse(op, split)
    if name == "linalg.transpose" and n == 0:
        return _through_transpose(op, split)
    if name == "tessera.rope.apply" and n == 0:
        return _per_head(op, split, "rope")
    if name == "tessera.norm.rms" and n == 0:
        return _per_head(op, split, "rms norm")
    if name in _CASTS:
        return split
    if name == "tessera.attention.flash" and n < 3:
        if split.axis != 1:
            raise located(
                f"attention's {'qkv'[n]} is split along axis {split.axis}; only its heads "
                "(axis 1) can be split over the ranks",
                op,
            )
        return split if n == 0 else None
    if name == "tessera.mma.proj" and n == 0:
        rank = len(shaped_dims(op.operands[0].type))
        if split.axis != rank - 1:
            raise located(
                f"x is split along axis {split.axis}; a projection can only contract a split "
                "last axis (row parallelism)",
                op,
            )
        row_parallel(op, split)
        return None
    if name == "tensor.dim":
        index = producer(op.operands[1])
        if index is not None and index.name == "arith.constant":
            axis = int(ir.IntegerAttr(index.attributes["value"]).value)
            if axis != split.axis:
                return None
        raise located(f"the size of a split axis is read here (the split comes from {origin})", op)
    raise located(
        f"cannot shard through '{name}': its operand #{n} holds a slice of axis {split.axis} "
        f"over the ranks (it comes from {origin}), and only reshapes, transposes, rope, rms "
        "norm, casts, attention and projections are known to work on such a slice",
        op,
    )
