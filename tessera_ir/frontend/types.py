"""Torch dtypes, shapes and constants as the front end writes them in MLIR (the syntax itself
is ``tessera.mlir_text``'s).

A dimension is an ``int`` when static, else the sympy expression torch.export gives it (``s27``,
``4*s27``); MLIR writes the latter as ``?``.
"""

from __future__ import annotations

from typing import TypeAlias

import sympy
import torch

from tessera.mlir_text import scalar_literal

Dim: TypeAlias = int | sympy.Expr
Shape: TypeAlias = tuple[Dim, ...]

ELEMENT_TYPES: dict[torch.dtype, str] = {
    torch.float64: "f64",
    torch.float32: "f32",
    torch.bfloat16: "bf16",
    torch.float16: "f16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.bool: "i1",
}
# Integer views of the float dtypes, for writing a large constant as raw hex bytes.
_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
}
REDUCED_FLOATS = (torch.bfloat16, torch.float16)


def element_type(dtype: torch.dtype) -> str | None:
    """The MLIR element type of ``dtype``, or None when Tessera does not handle it."""
    return ELEMENT_TYPES.get(dtype)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype torch accumulates sums and matmuls of ``dtype`` in (f32 for bf16/f16)."""
    return torch.float32 if dtype in REDUCED_FLOATS else dtype


def to_dim(size: int | torch.SymInt) -> Dim:
    if isinstance(size, int):
        return size
    expr = size.node.expr
    return int(expr) if expr.is_Integer else expr


def shape_of(value: torch.Tensor) -> Shape:
    """The shape of a (fake) tensor from a node's ``meta["val"]``."""
    return tuple(to_dim(d) for d in value.shape)


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


def same_dim(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return sympy.expand(sympy.sympify(a) - sympy.sympify(b)) == 0


def same_shape(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(same_dim(x, y) for x, y in zip(a, b, strict=True))


def product(dims: Shape) -> Dim:
    total: Dim = 1
    for d in dims:
        total = total * d
    if isinstance(total, sympy.Expr) and total.is_Integer:
        return int(total)
    return total


def lowest(dtype: torch.dtype) -> float:
    """The most negative finite value of a float dtype (what masks write for 'not allowed')."""
    return float(torch.finfo(dtype).min)


def exactly_representable(value: float | int | bool, dtype: torch.dtype) -> bool:
    """True when ``value`` survives a round trip through ``dtype`` unchanged."""
    return float(torch.tensor(float(value), dtype=torch.float64).to(dtype).double()) == float(value)


def dense_literal(tensor: torch.Tensor) -> str:
    """The body of ``dense<...>`` for a constant tensor: a splat, nested lists, or raw hex."""
    tensor = tensor.detach().cpu().contiguous()
    flat = tensor.reshape(-1)
    element = ELEMENT_TYPES[tensor.dtype]
    if flat.numel() and bool((flat == flat[0]).all()):
        return scalar_literal(flat[0].item(), element)
    if flat.numel() <= 4096 or tensor.dtype == torch.bool:
        return _nested(tensor.tolist(), element)
    view = tensor.view(_BITS[tensor.dtype]) if tensor.dtype in _BITS else tensor
    return '"0x' + view.numpy().tobytes().hex().upper() + '"'


def _nested(values: object, element: str) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_nested(v, element) for v in values) + "]"
    if not isinstance(values, (bool, int, float)):
        raise TypeError(f"a {element} constant holds {values!r}, which is not a number")
    return scalar_literal(values, element)
