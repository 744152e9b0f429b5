"""Building the ops rope's rewrite needs around ``tessera.rope.apply``: the [B, H, S, D] ↔
[B, S, H, D] transposes and, for positions shared by the whole batch ([1, S]), their
broadcast to [B, S]. Each builds at the current insertion point and location."""

from __future__ import annotations

from collections.abc import Sequence

from mlir import ir
from mlir.dialects import arith, linalg, tensor

from tessera.ir_types import ranked_tensor_type, shaped_dims

from .rope_tables import Positions

# [B, H, S, D] ↔ [B, S, H, D] (the permutation is its own inverse)
SWAP_HEADS_AND_TOKENS = (0, 2, 1, 3)


def _size(value: ir.Value, axis: int) -> ir.Value:
    # mypy reads the generated ConstantOp; arith.py replaces it with one taking (type, value).
    index = arith.ConstantOp(ir.IndexType.get(), axis).result  # type: ignore[call-arg]
    return tensor.dim(value, index)


def transpose(value: ir.Value, permutation: Sequence[int]) -> ir.Value:
    """``linalg.transpose`` of ``value`` into a new empty tensor."""
    dims = shaped_dims(value)
    sizes: list[int | ir.Value] = []
    for axis in permutation:
        dim = dims[axis]
        sizes.append(_size(value, axis) if dim is None else dim)
    init = tensor.empty(sizes, ir.ShapedType(value.type).element_type)
    order = list(permutation)
    # mypy reads the generated linalg.transpose; linalg/__init__.py replaces it (outs=...).
    transposed = linalg.transpose(value, outs=[init], permutation=order)  # type: ignore[call-arg]
    return transposed.results[0]


def positions_for(positions: Positions, x: ir.Value) -> ir.Value:
    """The positions as rope.apply takes them for ``x`` [B, S, H, D]: [B, S], reshaped from
    a view with unit dims and broadcast from one row when x may have more than one."""
    value = _rows_by_tokens(positions)
    batch = shaped_dims(x)[0]
    if shaped_dims(value)[0] != 1 or batch == 1:
        return value
    tokens = shaped_dims(value)[1]
    element = ir.ShapedType(value.type).element_type
    row = tensor.collapse_shape(ranked_tensor_type([tokens], element), value, [[0, 1]])
    sizes: list[int | ir.Value] = [
        _size(x, 0) if batch is None else batch,
        _size(value, 1) if tokens is None else tokens,
    ]
    init = tensor.empty(sizes, element)
    # mypy reads the generated linalg.broadcast; linalg/__init__.py replaces it (outs=...).
    return linalg.broadcast(row, outs=[init], dimensions=[0]).results[0]  # type: ignore[call-arg]


def _rows_by_tokens(positions: Positions) -> ir.Value:
    """``positions`` as a [rows, S] tensor: itself, [S] expanded to [1, S], or a view with
    unit dims ([1, S, 1], [B, 1, S]) collapsed to its batch and token dims."""
    value = positions.value
    dims = shaped_dims(value)
    element = ir.ShapedType(value.type).element_type
    tokens = dims[positions.token_axis]
    if len(dims) == 2:
        return value
    if len(dims) == 1:
        sizes = [] if tokens is not None else [_size(value, 0)]
        static = [1, ir.ShapedType.get_dynamic_size() if tokens is None else tokens]
        return tensor.expand_shape(
            ranked_tensor_type([1, tokens], element), value, [[0, 1]], sizes, static
        )
    groups = [[0], list(range(1, len(dims)))]
    return tensor.collapse_shape(ranked_tensor_type([dims[0], tokens], element), value, groups)
