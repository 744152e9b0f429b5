"""Recognising a torch Linear, ``y = x·wᵀ``, in high-level form or as a ``tessera.mma.proj``.

The high-level form (docs/high-level-ir.md) collapses x [..., K] to [M, K], multiplies with
``linalg.matmul`` through the transposed-B indexing maps into a zero-filled f32 accumulator,
rounds back with ``arith.truncf`` when x is narrower, and expands to [..., N]. The bias add is
not part of a ``Linear``: tessera-fuse-proj folds it, tessera-fuse-gated-mlp wants none.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from .match import (
    element_type,
    is_transpose_b_matmul,
    is_zero_fill,
    producer,
    producer_named,
    reassociation,
    shape,
    single_user,
)

FLOAT_TYPES = ("bf16", "f16", "f32", "f64")
# Attributes a plain linalg.matmul carries; anything else (e.g. a ``cast`` function) changes
# what it computes.
_MATMUL_ATTRIBUTES = {"indexing_maps", "operandSegmentSizes"}


@dataclass(frozen=True)
class Linear:
    """``output = x·wᵀ`` with x [..., K], w [N, K], output [..., N]."""

    x: ir.Value
    w: ir.Value
    output: ir.Value
    # The ops computing ``output``, first to last (the matmul, truncf and expand_shape, or the
    # one tessera.mma.proj); each value between them has a single use.
    ops: tuple[ir.Operation, ...]
    # The collapse_shape reading x, when x has rank > 2 (it may be shared with other users).
    collapse: ir.Operation | None = None

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


def match_linear(matmul: ir.Operation) -> Linear | None:
    """The Linear whose matmul is ``matmul``, or None.

    It extends over the truncf and expand_shape that follow as far as each value has a single
    use. When x was collapsed from a higher rank the expand back is required; a 2-D Linear
    may end at the matmul (an f32 output) or at the truncf."""
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
        source_rank = len(shape(collapse.operands[0]))
        if source_rank < 3 or not _leading_group(collapse, source_rank):
            collapse = None
    ops = [matmul]
    output = matmul.results[0]
    truncated = expanded = False
    while True:
        user = single_user(output)
        if user is None:
            break
        if user.name == "arith.truncf" and not truncated:
            truncated = True
        elif user.name == "tensor.expand_shape" and not expanded and collapse is not None:
            x = collapse.operands[0]
            restored = user.results[0]
            if not _leading_group(user, len(shape(x))) or shape(restored)[:-1] != shape(x)[:-1]:
                break
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
    return Linear(collapse.operands[0], w, output, tuple(ops), collapse)


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
