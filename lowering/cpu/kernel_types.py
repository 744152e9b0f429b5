"""Reading an op's operand types for the CPU kernels, with the errors a kernel raises when it
cannot take them."""

from __future__ import annotations

from mlir import ir

from tessera.ir_types import Dims, shaped_dims

from .registry import lowering_error

# Element types the kernels compute on (all arithmetic is f32; f16/bf16 are widened on load).
SUPPORTED = ("f32", "bf16", "f16")
# A kernel is written for its op's static sizes and unrolls its inner loops over some of them
# (a row of rms norm and lookup, rope's head, attention's head dims and key tile), so its code
# grows with them: 2^31 took the lowering past 8 GiB or past minutes. Those sizes are capped
# far above any model's (Gemma's widest such row is 5,376), and a larger one is refused at the
# op before any code is written.
MAX_UNROLLED = 65536


def dtype_of(value: ir.Value) -> str:
    return str(ir.ShapedType(value.type).element_type)


def float_dtype(op: ir.Operation, value: ir.Value, what: str) -> str:
    dtype = dtype_of(value)
    if dtype not in SUPPORTED:
        raise lowering_error(
            op, f"{what} has element type {dtype}; the cpu kernels take {', '.join(SUPPORTED)}"
        )
    return dtype


def static_dim(
    op: ir.Operation, value: ir.Value, axis: int, what: str, unrolled: bool = False
) -> int:
    """``value``'s size on ``axis``, which must be static (and at most ``MAX_UNROLLED`` when
    the kernel unrolls a loop over it)."""
    size = shaped_dims(value.type)[axis]
    if size is None:
        raise lowering_error(
            op, f"{what} {value.type} needs a static size on axis {axis} for the cpu kernel"
        )
    if unrolled:
        check_unrolled(
            op, size, f"{what} {value.type} on axis {axis % len(shaped_dims(value.type))}"
        )
    return size


def check_unrolled(op: ir.Operation, size: int, what: str) -> None:
    """Refuses a size the kernel unrolls a loop over (or blocks by) unless it is in
    [1, MAX_UNROLLED]: a zero width leaves the kernel nothing to block (a division by zero)."""
    if not 1 <= size <= MAX_UNROLLED:
        raise lowering_error(
            op,
            f"{what} is {size}; the cpu kernel unrolls its loops by this size and takes 1 to "
            f"{MAX_UNROLLED}",
        )


def static_dims(op: ir.Operation, value: ir.Value, axes: list[int], what: str) -> Dims:
    """``value``'s shape, requiring the listed axes to be static."""
    for axis in axes:
        static_dim(op, value, axis, what)
    return shaped_dims(value.type)


def check(condition: bool, op: ir.Operation, message: str) -> None:
    if not condition:
        raise lowering_error(op, message)
