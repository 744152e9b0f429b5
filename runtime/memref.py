"""MLIR's ranked memref descriptor as a ctypes struct, filled from a torch tensor.

Compiled CPU code takes each tensor as a pointer to ``{allocated, aligned, offset,
sizes[rank], strides[rank]}`` (MLIR's C interface). The runtime builds these from torch
tensors without copying.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch

from . import manifest

DTYPES: dict[str, torch.dtype] = {
    "f32": torch.float32,
    "f64": torch.float64,
    "bf16": torch.bfloat16,
    "f16": torch.float16,
    "i64": torch.int64,
    "i32": torch.int32,
    "i8": torch.int8,
    "i1": torch.bool,
}
assert tuple(DTYPES) == manifest.DTYPES, "memref.DTYPES and manifest.DTYPES must agree"


@cache
def descriptor_type(rank: int) -> type[ctypes.Structure]:
    fields = [
        ("allocated", ctypes.c_void_p),
        ("aligned", ctypes.c_void_p),
        ("offset", ctypes.c_int64),
    ]
    if rank:
        fields += [("sizes", ctypes.c_int64 * rank), ("strides", ctypes.c_int64 * rank)]
    return type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": fields})


def descriptor(tensor: torch.Tensor) -> ctypes.Structure:
    """A descriptor viewing ``tensor``'s storage (the tensor must outlive the call).

    ``aligned`` points at the tensor's first element and the offset is 0: code compiled for
    an identity-layout memref takes its offset to be 0 and never reads the field, so a view
    into a larger storage (``ids[1:]``) must not be described by its storage and an offset."""
    desc = descriptor_type(tensor.dim())()
    desc.allocated = tensor.data_ptr() - tensor.storage_offset() * tensor.element_size()
    desc.aligned = tensor.data_ptr()
    desc.offset = 0
    for axis in range(tensor.dim()):
        desc.sizes[axis] = tensor.shape[axis]
        desc.strides[axis] = tensor.stride(axis)
    return desc
