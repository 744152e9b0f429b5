"""The two batch matmuls of the attention pattern and the q, k, v behind their 3-D views.

The high-level IR multiplies [B, H, X, Y] tensors by collapsing them to [B·H, X, Y], calling
``linalg.batch_matmul`` with a zero-filled accumulator (f32 for bf16 inputs, then
``arith.truncf``) and expanding the result back. Keys are transposed (before or after the
collapse, or through the matmul's indexing maps) and k, v may be GQA-repeated: broadcast over
a new axis right after the kv-head axis, then collapsed into it (head h reads kv head
h / repeats, as ``tessera.attention.flash`` does). A single kv head may instead be stretched
over the query heads by a broadcast adding the head axis ([B, T, D] → [B, H, T, D], what
``expand`` of a [B, 1, T, D] tensor becomes), with the keys' transpose before or after it.
These helpers undo all of that and return plain data, or None when the IR is not of that
form.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import shaped_dims

from .constant_values import is_zero_fill
from .match import has_one_use, i64_array_attr, matmul_maps, producer, producer_named
from .reshape_view import reshape_source, through_reshapes

# [B, H, X, Y] ↔ [B·H, X, Y]
HEADS = ((0, 1), (2,), (3,))
# [B, Hkv, R, T, D] → [B, Hkv·R, T, D]: the GQA repeat
GQA = ((0,), (1, 2), (3,), (4,))
# both at once, as canonicalize composes them: [B, Hkv, R, T, D] → [B·Hkv·R, T, D]
GQA_HEADS = ((0, 1, 2), (3,), (4,))

_NORMAL = ("(d0,d1,d2,d3)->(d0,d1,d3)", "(d0,d1,d2,d3)->(d0,d3,d2)", "(d0,d1,d2,d3)->(d0,d1,d2)")
_TRANSPOSED_B = (
    "(d0,d1,d2,d3)->(d0,d1,d3)",
    "(d0,d1,d2,d3)->(d0,d2,d3)",
    "(d0,d1,d2,d3)->(d0,d1,d2)",
)


@dataclass(frozen=True)
class BatchMatmul:
    """A ``linalg.batch_matmul`` read back to the [B, H, X, Y] value it produces."""

    op: ir.Operation
    lhs: ir.Value  # [B·H, X, K]
    rhs: ir.Value  # [B·H, K, Y], or [B·H, Y, K] when ``transposed_rhs``
    transposed_rhs: bool
    ops: tuple[ir.Operation, ...]  # the batch_matmul and what lies between it and the value


@dataclass(frozen=True)
class KeyValue:
    """k or v as ``tessera.attention.flash`` takes it ([B, Hkv, T, D]), and how many times the
    pattern repeated each head (1 when it did not)."""

    value: ir.Value
    repeats: int
    ops: tuple[ir.Operation, ...]


def _map_text(maps: list[str]) -> tuple[str, ...]:
    return tuple(m.removeprefix("affine_map<").removesuffix(">").replace(" ", "") for m in maps)


def batch_matmul_of(value: ir.Value) -> BatchMatmul | None:
    """The batch matmul whose [B·H, X, Y] result ``value`` [B, H, X, Y] expands, through one
    optional ``arith.truncf`` before or after the reshapes. Every value between the two has
    one use; the accumulator is zero."""
    ops: list[ir.Operation] = []
    current = value
    truncated = False
    truncf = producer_named(current, "arith.truncf")
    if truncf is not None:
        ops.append(truncf)
        current, truncated = truncf.operands[0], True
    found = reshape_source(current, HEADS, expand=True)
    if found is None:
        return None
    current = found[0]
    ops += found[1]
    truncf = None if truncated else producer_named(current, "arith.truncf")
    if truncf is not None:
        ops.append(truncf)
        current = truncf.operands[0]
    op = producer_named(current, "linalg.batch_matmul")
    if op is None or len(op.operands) != 3 or not is_zero_fill(op.operands[2]):
        return None
    ops.append(op)
    if not all(has_one_use(o.results[0]) for o in ops[1:]):
        return None
    maps = matmul_maps(op)
    transposed = maps is not None and _map_text(maps) == _TRANSPOSED_B
    if maps is not None and not transposed and _map_text(maps) != _NORMAL:
        return None
    return BatchMatmul(op, op.operands[0], op.operands[1], transposed, tuple(ops))


def flat_batch_matmul_of(value: ir.Value) -> BatchMatmul | None:
    """The batch matmul producing ``value`` [B·H, X, Y] itself (scores a model computed on
    flattened heads, as ``baddbmm`` does), through one optional ``arith.truncf``."""
    ops: list[ir.Operation] = []
    truncf = producer_named(value, "arith.truncf")
    if truncf is not None:
        ops.append(truncf)
        value = truncf.operands[0]
    op = producer_named(value, "linalg.batch_matmul")
    if op is None or len(op.operands) != 3 or not is_zero_fill(op.operands[2]):
        return None
    ops.append(op)
    if not all(has_one_use(o.results[0]) for o in ops[1:]):
        return None
    maps = matmul_maps(op)
    transposed = maps is not None and _map_text(maps) == _TRANSPOSED_B
    if maps is not None and not transposed and _map_text(maps) != _NORMAL:
        return None
    return BatchMatmul(op, op.operands[0], op.operands[1], transposed, tuple(ops))


def heads_of(value: ir.Value) -> tuple[ir.Value, tuple[ir.Operation, ...]] | None:
    """The [B, H, X, Y] tensor that ``value`` [B·H, X, Y] collapses, and the reshapes."""
    found = reshape_source(value, HEADS)
    return None if found is None else (found[0], tuple(found[1]))


def key_value(value: ir.Value) -> KeyValue | None:
    """k or v [B, Hkv, T, D] behind ``value`` [B·H, T, D], undoing a GQA repeat. A repeat of
    any other form (a new axis elsewhere, heads interleaved) does not match."""
    origin = producer(through_reshapes(value))
    if origin is not None and origin.name == "linalg.broadcast":
        found = reshape_source(value, GQA_HEADS)
        if found is not None:
            return _repeat(found[0], found[1])
    views = heads_of(value)
    if views is None:
        return None
    repeated = _repeated_heads(views[0])
    if repeated is None:
        return None
    return KeyValue(repeated.value, repeated.repeats, views[1] + repeated.ops)


def key_of(matmul: BatchMatmul) -> KeyValue | None:
    """k [B, Hkv, T, D] behind the right operand of q·kᵀ: transposed by the matmul's maps,
    by a 3-D ``linalg.transpose`` [0, 2, 1] or by a 4-D one [0, 1, 3, 2] before the collapse
    (or, for a single kv head, before the broadcast over the heads)."""
    rhs = matmul.rhs
    if matmul.transposed_rhs:
        return key_value(rhs)
    transpose = producer_named(rhs, "linalg.transpose")
    if transpose is not None:
        if i64_array_attr(transpose, "permutation") != [0, 2, 1]:
            return None
        found = key_value(transpose.operands[0])
        return None if found is None else _with(found, transpose)
    views = heads_of(rhs)
    if views is None:
        return None
    spread = _one_head_spread(views[0], transposed=True)
    if spread is not None:
        return KeyValue(spread.value, spread.repeats, (*views[1], *spread.ops))
    transpose = producer_named(views[0], "linalg.transpose")
    if transpose is None or i64_array_attr(transpose, "permutation") != [0, 1, 3, 2]:
        return None
    repeated = _repeated_heads(transpose.operands[0])
    if repeated is None:
        return None
    return KeyValue(repeated.value, repeated.repeats, (*views[1], transpose, *repeated.ops))


def _repeated_heads(value: ir.Value) -> KeyValue | None:
    """``value`` [B, H, T, D] itself, or the k/v it GQA-repeats."""
    spread = _one_head_spread(value, transposed=False)
    if spread is not None:
        return spread
    origin = producer(through_reshapes(value))
    if origin is None or origin.name != "linalg.broadcast":
        return KeyValue(value, 1, ())
    found = reshape_source(value, GQA)
    return None if found is None else _repeat(found[0], found[1])


def _one_head_spread(value: ir.Value, transposed: bool) -> KeyValue | None:
    """The [B, 1, T, D] k or v that ``value`` [B, H, T, D] broadcasts over H heads: a
    ``linalg.broadcast`` adding axis 1 to its [B, T, D] view (with ``transposed``, to the
    [B, D, T] transpose of that view)."""
    broadcast = producer_named(value, "linalg.broadcast")
    heads = shaped_dims(value)[1] if len(shaped_dims(value)) == 4 else None
    if broadcast is None or heads is None or i64_array_attr(broadcast, "dimensions") != [1]:
        return None
    ops: list[ir.Operation] = [broadcast]
    source = broadcast.operands[0]
    if transposed:
        transpose = producer_named(source, "linalg.transpose")
        if transpose is None or i64_array_attr(transpose, "permutation") != [0, 2, 1]:
            return None
        ops.append(transpose)
        source = transpose.operands[0]
    found = reshape_source(source, HEADS)
    if found is None or shaped_dims(found[0])[1] != 1:
        return None
    return KeyValue(found[0], heads, (*ops, *found[1]))


def _repeat(expanded: ir.Value, reshapes: list[ir.Operation]) -> KeyValue | None:
    """The source of a GQA broadcast [B, Hkv, T, D] → [B, Hkv, R, T, D] (dimensions = [2])."""
    broadcast = producer_named(expanded, "linalg.broadcast")
    if broadcast is None or i64_array_attr(broadcast, "dimensions") != [2]:
        return None
    source = broadcast.operands[0]
    repeats = shaped_dims(expanded)[2]
    if len(shaped_dims(source)) != 4 or repeats is None:
        return None
    return KeyValue(source, repeats, (*reshapes, broadcast))


def _with(found: KeyValue, op: ir.Operation) -> KeyValue:
    return KeyValue(found.value, found.repeats, (op, *found.ops))
