"""Torch dtypes, shapes and numbers written as MLIR types and literals.

A dimension is an ``int`` when static, else the sympy expression torch.export gives it (``s27``,
``4*s27``); MLIR writes the latter as ``?``.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import sympy
import torch

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
# Bit-pattern views for writing non-finite floats in hex, as MLIR's float literal syntax needs.
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


def tensor_type(shape: Shape, element: str) -> str:
    dims = "".join(("?" if not is_static(d) else str(d)) + "x" for d in shape)
    return f"tensor<{dims}{element}>"


def float_literal(value: float, dtype: torch.dtype) -> str:
    """``value`` as an MLIR literal of float ``dtype``: decimal when finite, else hex bits.

    The decimal is Python's shortest repr of the double, which MLIR rounds correctly into the
    target type; MLIR needs a '.' in it (``1e-06`` would read as the integer 1)."""
    value = float(value)
    if math.isfinite(value):
        text = repr(value)
        if "e" in text and "." not in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    bits = int(torch.tensor(value, dtype=dtype).view(_BITS[dtype]).item())
    width = torch.finfo(dtype).bits
    return f"0x{bits & ((1 << width) - 1):0{width // 4}X}"


def scalar_literal(value: float | int | bool, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "true" if value else "false"
    if dtype.is_floating_point:
        return float_literal(value, dtype)
    return str(int(value))


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
    if flat.numel() and bool((flat == flat[0]).all()):
        return scalar_literal(flat[0].item(), tensor.dtype)
    if flat.numel() <= 4096 or tensor.dtype == torch.bool:
        return _nested(tensor.tolist(), tensor.dtype)
    view = tensor.view(_BITS[tensor.dtype]) if tensor.dtype in _BITS else tensor
    return '"0x' + view.numpy().tobytes().hex().upper() + '"'


def _nested(values: object, dtype: torch.dtype) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_nested(v, dtype) for v in values) + "]"
    if not isinstance(values, (bool, int, float)):
        raise TypeError(f"a {dtype} constant holds {values!r}, which is not a number")
    return scalar_literal(values, dtype)


def quote(text: str) -> str:
    """``text`` as an MLIR string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\0A") + '"'
