"""Tensor-level glue around memref kernels.

A kernel's wrapper function views its tensor operands as buffers, allocates its result buffer,
calls the kernel core and returns the buffer as a tensor again. One-shot bufferization then sees
plain ``to_buffer``/``to_tensor`` pairs: an operand whose buffer has another layout (a strided
slice) is copied, everything else is used in place.

Cores are shared between ops of the same static sizes: their leading (batch-like) dims are
always dynamic, and a core that works on rows merges the leading dims itself with
``memref.collapse_shape`` (``expand-strided-metadata`` cannot split one dynamic dim into
several, so the merge happens on the buffers, never the reverse).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlir import ir

from tessera.ir_types import Dims, shaped_dims
from tessera.mlir_text import memref_type, tensor_type

from .builder import Kernel


def dims_of(k: Kernel, value: str, shape: Dims, dtype: str) -> list[str]:
    """Each dim of tensor ``value`` as an index SSA value."""
    out: list[str] = []
    for axis, dim in enumerate(shape):
        if dim is None:
            out.append(
                k.op("dim", f"tensor.dim {value}, {k.index(axis)} : {tensor_type(shape, dtype)}")
            )
        else:
            out.append(k.index(dim))
    return out


def buffer_of(k: Kernel, value: str, shape: Dims, dtype: str, view: Dims) -> str:
    """A read-only identity-layout memref of tensor ``value``, typed with the core's ``view``
    of the shape (static dims of ``shape`` may be dynamic there)."""
    if view != shape:
        value = k.op(
            "t", f"tensor.cast {value} : {tensor_type(shape, dtype)} to {tensor_type(view, dtype)}"
        )
    return k.op(
        "m",
        f"bufferization.to_buffer {value} read_only : {tensor_type(view, dtype)} "
        f"to {memref_type(view, dtype)}",
    )


def alloc(k: Kernel, shape: Dims, dtype: str, sizes: Sequence[str]) -> str:
    """A fresh buffer of ``shape``; ``sizes`` holds every dim's size, dynamic ones are used."""
    dynamic = [s for d, s in zip(shape, sizes, strict=True) if d is None]
    return k.op("m", f"memref.alloc({', '.join(dynamic)}) : {memref_type(shape, dtype)}")


def tensor_of(k: Kernel, buffer: str, view: Dims, dtype: str, shape: Dims) -> str:
    """The tensor holding ``buffer``'s contents (never written afterwards), typed ``shape``."""
    value = k.op(
        "t",
        f"bufferization.to_tensor {buffer} restrict writable : "
        f"{memref_type(view, dtype)} to {tensor_type(view, dtype)}",
    )
    if view != shape:
        value = k.op(
            "t", f"tensor.cast {value} : {tensor_type(view, dtype)} to {tensor_type(shape, dtype)}"
        )
    return value


def return_tensor(k: Kernel, buffer: str, view: Dims, dtype: str, type_: ir.Type) -> str:
    """Ends a wrapper: returns ``buffer`` as a tensor of the result type ``type_``; the
    wrapper's text."""
    result = tensor_of(k, buffer, view, dtype, shaped_dims(type_))
    k.line(f"return {result} : {type_}")
    return k.text()


def rows_view(k: Kernel, buffer: str, shape: Dims, dtype: str) -> str:
    """Memref ``buffer`` [..., W] (identity layout) as memref<?xW> with leading dims merged."""
    width = shape[-1]
    rows_type = memref_type([None, width], dtype)
    if len(shape) == 1:
        expanded = k.op(
            "m",
            f"memref.expand_shape {buffer} [[0, 1]] output_shape [1, {width}] : "
            f"{memref_type(shape, dtype)} into {memref_type([1, width], dtype)}",
        )
        return k.op(
            "m", f"memref.cast {expanded} : {memref_type([1, width], dtype)} to {rows_type}"
        )
    if len(shape) == 2:
        if shape[0] is None:
            return buffer
        return k.op("m", f"memref.cast {buffer} : {memref_type(shape, dtype)} to {rows_type}")
    leading = ", ".join(str(i) for i in range(len(shape) - 1))
    leading_sizes = [d for d in shape[:-1] if d is not None]
    merged = math.prod(leading_sizes) if len(leading_sizes) == len(shape) - 1 else None
    collapsed_type = memref_type([merged, width], dtype)
    collapsed = k.op(
        "m",
        f"memref.collapse_shape {buffer} [[{leading}], [{len(shape) - 1}]] : "
        f"{memref_type(shape, dtype)} into {collapsed_type}",
    )
    if merged is None:
        return collapsed
    return k.op("m", f"memref.cast {collapsed} : {collapsed_type} to {rows_type}")
