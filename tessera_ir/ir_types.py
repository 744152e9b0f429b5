"""Shaped types as the passes and lowerings read and make them: dims as a list with None for a
dynamic size, element types by MLIR's spelling (``f32``, ``bf16``, ``i64``).

``tessera.mlir_text`` writes the same types as text.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlir import ir

# Dims as ``shaped_dims`` gives them: an int for a static size, None for a dynamic one.
Dims = list[int | None]


def _shaped(x: ir.Value | ir.Type) -> ir.ShapedType | None:
    type_ = x.type if isinstance(x, ir.Value) else x
    if not isinstance(type_, ir.ShapedType):
        try:
            type_ = ir.ShapedType(type_)
        except ValueError:
            return None
    return type_ if type_.has_rank else None


def shaped_dims(x: ir.Value | ir.Type) -> Dims:
    """The dims of a ranked tensor, memref or vector (or of a value of one), None for a
    dynamic size; [] for anything else (a scalar)."""
    shaped = _shaped(x)
    if shaped is None:
        return []
    return [
        None if shaped.is_dynamic_dim(i) else shaped.get_dim_size(i) for i in range(shaped.rank)
    ]


def element_type(x: ir.Value | ir.Type) -> str:
    """The element type of a shaped type (or of a value of one) as text; a scalar's own."""
    shaped = _shaped(x)
    if shaped is not None:
        return str(shaped.element_type)
    return str(x.type if isinstance(x, ir.Value) else x)


def ranked_tensor_type(shape: Sequence[int | None], element: ir.Type) -> ir.RankedTensorType:
    """``tensor<...>`` of ``shape`` (None: dynamic) and ``element``."""
    dynamic = ir.ShapedType.get_dynamic_size()
    return ir.RankedTensorType.get([dynamic if d is None else d for d in shape], element)
