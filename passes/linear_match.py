"""Recognising a torch Linear, ``y = x·wᵀ``, in high-level form or as a ``tessera.mma.proj``.

The high-level form (docs/high-level-ir.md) collapses x [..., K] to [M, K], multiplies with
``linalg.matmul`` through the transposed-B indexing maps into a zero-filled f32 accumulator,
rounds back with ``arith.truncf`` when x is narrower, and expands to [..., N]. The bias add is
not part of a ``Linear``: tessera-fuse-proj folds it, tessera-fuse-gated-mlp wants none.

canonicalize merges that expand with a view that follows it, so the q/k/v projections of an
attention block arrive as one expand [M, N] → [B, S, H, D] by [[0, 1], [2, 3]]. A caller that
can put the split back after the fused op asks ``match_linear`` for such Linears with
``split=True``; everyone else gets only Linears whose output is [..., N].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import element_type, shaped_dims

from .constant_values import is_zero_fill
from .match import is_transpose_b_matmul, producer, producer_named, reassociation, single_user

FLOAT_TYPES = ("bf16", "f16", "f32", "f64")
# Attributes a plain linalg.matmul carries; anything else (e.g. a ``cast`` function) changes
# what it computes.
_MATMUL_ATTRIBUTES = {"indexing_maps", "operandSegmentSizes"}


@dataclass(frozen=True)
class Linear:
    """``output = x·wᵀ`` with x [..., K], w [N, K], output [..., N] (or [..., *split])."""

    x: ir.Value
    w: ir.Value
    output: ir.Value
    # The ops computing ``output``, first to last (the matmul, truncf and expand_shape, or the
    # one tessera.mma.proj); each value between them has a single use.
    ops: tuple[ir.Operation, ...]
    # The collapse_shape reading x, when x has rank > 2 (it may be shared with other users).
    collapse: ir.Operation | None = None
    # The static dims the expand back splits N into, when it was merged with a view into
    # heads (output [..., H, D] for x [..., K]); empty when output is [..., N].
    split: tuple[int, ...] = ()

    @property
    def root(self) -> ir.Operation:
        return self.ops[-1]

    @property
    def reader(self) -> ir.Operation:
        """The op that reads x."""
        return self.collapse if self.collapse is not None else self.ops[0]


def _leading_group(op: ir.Operation, rank: int) -> bool:
    """The reshape groups all dims but the last one: [[0, ..., rank-2], [rank-1]]."""
    return reassociation(op) == [list(range(rank - 1)), [rank - 1]]


def _restored_dims(expand: ir.Operation, x: ir.Value) -> list[int | None] | None:
    """The dims that ``expand`` (from [M, N], M = x's leading dims collapsed) puts after x's
    leading dims, when it first restores exactly those and then holds N; None otherwise.

    From [M, N] the reassociation is two groups cut at one result dim. The cut may sit away
    from the end of x's leading dims across unit dims only, which do not change the reshape:
    canonicalize gives a single kv head [B, S, 1, D] to the rows, [[0, 1, 2], [3]].

    A dynamic leading dim is taken to be x's, which types cannot prove: a Linear's expand
    back restores the sizes x was collapsed from (torch views the output by x's own sizes)."""
    lead = len(shaped_dims(x)) - 1
    restored = shaped_dims(expand.results[0])
    groups = reassociation(expand)
    if len(groups) != 2 or len(restored) <= lead:
        return None
    cut = len(groups[0])
    if any(d != 1 for d in restored[min(cut, lead) : max(cut, lead)]):
        return None
    if restored[:lead] != shaped_dims(x)[:lead]:
        return None
    return restored[lead:]


def _split_of_n(expand: ir.Operation, x: ir.Value) -> tuple[int, ...] | None:
    """() when ``expand`` restores x's leading dims and keeps N; the trailing dims when it
    also splits N into static dims whose product is N; None otherwise."""
    trailing = _restored_dims(expand, x)
    if trailing is None:
        return None
    if len(trailing) == 1:
        return ()
    n = shaped_dims(expand.operands[0])[-1]
    if n is None or None in trailing:
        return None
    dims = tuple(d for d in trailing if d is not None)
    return dims if math.prod(dims) == n else None


def match_linear(matmul: ir.Operation, *, split: bool = False) -> Linear | None:
    """The Linear whose matmul is ``matmul``, or None.

    It extends over the truncf and expand_shape that follow as far as each value has a single
    use. When x was collapsed from a higher rank the expand back is required; a 2-D Linear
    may end at the matmul (an f32 output) or at the truncf. With ``split``, the expand back
    may also split N into trailing dims (``Linear.split``)."""
    if matmul.name != "linalg.matmul" or not is_transpose_b_matmul(matmul):
        return None
    if {name for name, _ in matmul.attributes.items()} - _MATMUL_ATTRIBUTES:
        return None
    if len(matmul.operands) != 3 or len(matmul.results) != 1:
        return None
    a, w, accumulator = matmul.operands
    if element_type(accumulator) != "f32" or not is_zero_fill(accumulator):
        return None
    if element_type(a) not in FLOAT_TYPES or element_type(w) not in FLOAT_TYPES:
        return None
    collapse = producer_named(a, "tensor.collapse_shape")
    if collapse is not None:
        source_rank = len(shaped_dims(collapse.operands[0]))
        if source_rank < 3 or not _leading_group(collapse, source_rank):
            collapse = None
    ops = [matmul]
    output = matmul.results[0]
    truncated = expanded = False
    split_dims: tuple[int, ...] = ()
    while True:
        user = single_user(output)
        if user is None:
            break
        if user.name == "arith.truncf" and not truncated:
            truncated = True
        elif user.name == "tensor.expand_shape" and not expanded and collapse is not None:
            found = _split_of_n(user, collapse.operands[0])
            if found is None or (found and not split):
                break
            split_dims = found
            expanded = True
        else:
            break
        ops.append(user)
        output = user.results[0]
    if collapse is None:
        return Linear(a, w, output, tuple(ops))
    # x was collapsed: without the expand back, a value in between has another user.
    if not expanded:
        return None
    return Linear(collapse.operands[0], w, output, tuple(ops), collapse, split_dims)


def proj_as_linear(op: ir.Operation) -> Linear | None:
    """A ``tessera.mma.proj {transpose_w = true}`` without bias or softcap, as a Linear."""
    if op.name != "tessera.mma.proj" or len(op.operands) != 2:
        return None
    transpose = op.attributes["transpose_w"] if "transpose_w" in op.attributes else None
    if not isinstance(transpose, ir.BoolAttr) or not transpose.value:
        return None
    if "softcap" in op.attributes:
        return None
    return Linear(op.operands[0], op.operands[1], op.results[0], (op,))


def linear_at(op: ir.Operation) -> Linear | None:
    """The Linear anchored at ``op``: a high-level matmul or a transposed tessera.mma.proj."""
    if op.name == "tessera.mma.proj":
        return proj_as_linear(op)
    return match_linear(op)


def linear_output(value: ir.Value) -> Linear | None:
    """The Linear whose (whole) output is ``value``, or None."""
    current = value
    for _ in range(3):  # at most expand_shape, truncf, then the matmul
        op = producer(current)
        if op is None:
            return None
        if op.name in ("linalg.matmul", "tessera.mma.proj"):
            found = linear_at(op)
            return found if found is not None and found.output == value else None
        if op.name not in ("arith.truncf", "tensor.expand_shape"):
            return None
        current = op.operands[0]
    return None
