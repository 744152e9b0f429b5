"""Element types: how a value is held in registers (numpy arrays) and in memory; launch
limits and ``KernelFault``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mlir import ir

WARP = 32
WORDS = [np.arange(n) for n in range(64)]
# A batch of blocks runs in lock step; bigger grids run batch after batch.
MAX_BATCH_THREADS = 8192
MAX_BATCH_SMEM = 8 << 20
# The most dynamic shared memory a block may opt into, by the target chip (CUDA C Programming
# Guide, "Technical Specifications per Compute Capability").
MAX_SMEM = {"sm_80": 166912, "sm_86": 101376, "sm_89": 101376, "sm_90": 232448, "sm_90a": 232448}


class KernelFault(AssertionError):
    """The kernel did something wrong on a GPU: an access out of bounds or misaligned, a data
    race (a missing barrier or wait), a barrier or warp-collective op under divergence, an
    element stored twice."""


@dataclass(frozen=True)
class Kind:
    """An element type: its MLIR spelling, numpy type in registers and in memory, byte size."""

    name: str
    reg: type
    mem: type
    size: int


KINDS = {
    "bf16": Kind("bf16", np.float32, np.uint16, 2),
    "f16": Kind("f16", np.float32, np.float16, 2),
    "f32": Kind("f32", np.float32, np.float32, 4),
    "f64": Kind("f64", np.float64, np.float64, 8),
    "i1": Kind("i1", np.bool_, np.int8, 1),
    "i8": Kind("i8", np.int8, np.int8, 1),
    "i16": Kind("i16", np.int16, np.int16, 2),
    "i32": Kind("i32", np.int32, np.int32, 4),
    "i64": Kind("i64", np.int64, np.int64, 8),
    "index": Kind("index", np.int64, np.int64, 8),
}
FLOATS = ("bf16", "f16", "f32", "f64")
UNSIGNED: dict[type, type] = {
    np.int8: np.uint8,
    np.int16: np.uint16,
    np.int32: np.uint32,
    np.int64: np.uint64,
}
BITS: dict[int, type] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits, rounded to nearest even (a NaN stays a quiet NaN)."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def round_to(kind: Kind, values: Any) -> np.ndarray:
    """``values`` rounded to ``kind`` (nearest even) and held in its register type."""
    if kind.name == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(values))
    if kind.name == "f16":
        return np.asarray(values, dtype=np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(values).astype(kind.reg, copy=False)


def to_memory(kind: Kind, values: Any) -> np.ndarray:
    if kind.name == "bf16":
        return f32_to_bf16_bits(values)
    return np.asarray(values).astype(kind.mem)


def from_memory(kind: Kind, stored: np.ndarray) -> np.ndarray:
    if kind.name == "bf16":
        return bf16_bits_to_f32(stored)
    if kind.name == "i1":
        return stored != 0
    return stored.astype(kind.reg)


def to_bits(kind: Kind, values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(to_memory(kind, values)).view(BITS[kind.size])


def from_bits(kind: Kind, bits: np.ndarray) -> np.ndarray:
    return from_memory(kind, np.ascontiguousarray(bits).view(kind.mem))


def element_name(type_: ir.Type) -> str:
    if isinstance(type_, ir.ShapedType):
        type_ = type_.element_type
    if isinstance(type_, ir.IndexType):
        return "index"
    if isinstance(type_, ir.IntegerType):
        return f"i{type_.width}"
    return str(type_)


def kind_of(type_: ir.Type) -> Kind:
    name = element_name(type_)
    if name not in KINDS:
        raise NotImplementedError(f"the interpreter has no element type {name}")
    return KINDS[name]


def shape_of(type_: ir.Type) -> tuple[int, ...]:
    return tuple(ir.VectorType(type_).shape) if isinstance(type_, ir.VectorType) else ()
