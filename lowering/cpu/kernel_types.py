"""Reading an op's operand types for the CPU kernels, with the errors a kernel raises when it
cannot take them."""

from __future__ import annotations

from mlir import ir

from ..text import Shape, shape_of
from .registry import lowering_error

# Element types the kernels compute on (all arithmetic is f32; f16/bf16 are widened on load).
SUPPORTED = ("f32", "bf16", "f16")


def dtype_of(value: ir.Value) -> str:
    return str(ir.ShapedType(value.type).element_type)


def float_dtype(op: ir.Operation, value: ir.Value, what: str) -> str:
    dtype = dtype_of(value)
    if dtype not in SUPPORTED:
        raise lowering_error(
            op, f"{what} has element type {dtype}; the cpu kernels take {', '.join(SUPPORTED)}"
        )
    return dtype


def static_dim(op: ir.Operation, value: ir.Value, axis: int, what: str) -> int:
    """``value``'s size on ``axis``, which must be static."""
    size = shape_of(value.type)[axis]
    if size is None:
        raise lowering_error(
            op, f"{what} {value.type} needs a static size on axis {axis} for the cpu kernel"
        )
    return size


def static_dims(op: ir.Operation, value: ir.Value, axes: list[int], what: str) -> Shape:
    """``value``'s shape, requiring the listed axes to be static."""
    for axis in axes:
        static_dim(op, value, axis, what)
    return shape_of(value.type)


def check(condition: bool, op: ir.Operation, message: str) -> None:
    if not condition:
        raise lowering_error(op, message)
