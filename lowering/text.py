"""Helpers for writing kernels as MLIR text: types, dynamic sizes, literals."""

from __future__ import annotations

import math
import struct

from mlir import ir

Shape = list[int | None]

# Bit patterns of -inf, which MLIR's float literal syntax needs in hex.
NEG_INF = {"f32": "0xFF800000", "f16": "0xFC00", "bf16": "0xFF80", "f64": "0xFFF0000000000000"}


def shape_of(type_: ir.Type) -> Shape:
    """The dims of a ranked tensor or memref type, None for dynamic ones."""
    shaped = ir.ShapedType(type_)  # checks the class the stubs cannot know
    return [
        None if shaped.is_dynamic_dim(i) else shaped.get_dim_size(i) for i in range(shaped.rank)
    ]


def tensor_type(shape: Shape, dtype: str) -> str:
    dims = "x".join("?" if d is None else str(d) for d in shape)
    return f"tensor<{dims}x{dtype}>" if shape else f"tensor<{dtype}>"


def memref_type(shape: Shape, dtype: str) -> str:
    dims = "x".join("?" if d is None else str(d) for d in shape)
    return f"memref<{dims}x{dtype}>" if shape else f"memref<{dtype}>"


def float_literal(value: float, dtype: str) -> str:
    """``value`` as an MLIR float literal of ``dtype`` (hex for infinities and NaN)."""
    if math.isinf(value) and value < 0:
        return NEG_INF[dtype]
    if math.isinf(value) or math.isnan(value):
        if dtype == "f32":
            return "0x" + struct.pack(">f", value).hex().upper()
        raise ValueError(f"non-finite {value} for {dtype}")
    text = repr(float(value))
    # MLIR's float literals need a '.' before any exponent: 1e-06 would not parse.
    if "." not in text:
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0" + (f"e{exponent}" if exponent else "")
    return text


def dynamic_sizes(
    value: str, shape: Shape, dtype: str, prefix: str
) -> tuple[list[str], dict[int, str]]:
    """Lines computing ``tensor.dim`` of each dynamic dim of ``value``, and their names."""
    lines: list[str] = []
    names: dict[int, str] = {}
    ty = tensor_type(shape, dtype)
    for axis, dim in enumerate(shape):
        if dim is None:
            name = f"%{prefix}_d{axis}"
            lines.append(f"%{prefix}_c{axis} = arith.constant {axis} : index")
            lines.append(f"{name} = tensor.dim {value}, %{prefix}_c{axis} : {ty}")
            names[axis] = name
    return lines, names


def empty(
    shape: Shape, dtype: str, sizes: dict[int, str], source_axes: list[int] | None = None
) -> str:
    """A ``tensor.empty`` of ``shape``; dynamic dim i takes ``sizes[source_axes[i]]``."""
    axes = source_axes if source_axes is not None else list(range(len(shape)))
    dynamic = [sizes[axes[i]] for i, d in enumerate(shape) if d is None]
    return f"tensor.empty({', '.join(dynamic)}) : {tensor_type(shape, dtype)}"
