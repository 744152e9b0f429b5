"""The numbers constants hold: scalar constants, splats (looked for through fills,
broadcasts and reshapes) and the elements of dense constants of any int or float type.
"""

from __future__ import annotations

import math
import struct

from mlir import ir

from .match import producer, producer_named


def scalar_constant(value: ir.Value) -> float | int | None:
    """The number a scalar ``arith.constant`` holds, or None."""
    op = producer_named(value, "arith.constant")
    if op is None:
        return None
    attr = op.attributes["value"]
    if isinstance(attr, ir.FloatAttr):
        return float(attr.value)
    if isinstance(attr, ir.IntegerAttr | ir.BoolAttr):
        return int(attr.value)
    return None


def splat_value(value: ir.Value) -> float | int | None:
    """The single number every element of ``value`` holds, looking through fills, splat
    constants, broadcasts and reshapes; None when ``value`` is not a splat."""
    op = producer(value)
    while op is not None and op.name in (
        "linalg.broadcast",
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.cast",
    ):
        op = producer(op.operands[0])
    if op is None:
        return None
    if op.name == "linalg.fill":
        return scalar_constant(op.operands[0])
    if op.name == "arith.constant":
        attr = op.attributes["value"]
        if isinstance(attr, ir.DenseElementsAttr) and attr.is_splat:
            return splat_element(attr)
        if isinstance(attr, ir.FloatAttr | ir.IntegerAttr):
            return attr.value
    return None


def is_zero_fill(value: ir.Value) -> bool:
    """Every element of ``value`` is 0 (a zero fill or splat, as the init of a plain matmul
    or sum)."""
    return splat_value(value) == 0


def split_splat(op: ir.Operation) -> tuple[ir.Value, float | int] | None:
    """For a binary op with exactly one splat operand: the other operand and the number."""
    if len(op.operands) != 2:
        return None
    first, second = splat_value(op.operands[0]), splat_value(op.operands[1])
    if (first is None) == (second is None):
        return None
    if second is not None:
        return op.operands[0], second
    assert first is not None
    return op.operands[1], first


def _bf16(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits << 16))[0])


def _f16(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits))[0])


def splat_element(attr: ir.DenseElementsAttr) -> float | int:
    """The one element of a splat DenseElementsAttr (i1 reads as 0/1)."""
    splat = attr.get_splat_value()
    if isinstance(splat, ir.BoolAttr):
        return int(splat.value)
    if isinstance(splat, ir.FloatAttr):
        return float(splat.value)
    return int(ir.IntegerAttr(splat).value)


def dense_elements(attr: ir.Attribute) -> list[float | int]:
    """Every element (row-major) of a DenseElementsAttr of int or float elements; i1 reads
    as 0/1.

    The bindings cannot read bf16/f16 elements, so those are decoded from the attribute's
    text: a literal list (non-finite values as hex bit patterns) or, for large constants,
    one hex string of the little-endian element bytes."""
    if not isinstance(attr, ir.DenseElementsAttr):
        raise TypeError(f"not a dense elements attribute: {attr}")
    type_ = ir.ShapedType(attr.type)
    count = math.prod(type_.get_dim_size(i) for i in range(type_.rank))
    element = type_.element_type
    if attr.is_splat:
        return [splat_element(attr)] * count
    if not isinstance(element, ir.BF16Type | ir.F16Type):
        if not isinstance(attr, ir.DenseIntElementsAttr | ir.DenseFPElementsAttr):
            raise TypeError(f"not an int or float dense elements attribute: {attr}")
        return [attr[i] for i in range(count)]
    decode = _bf16 if isinstance(element, ir.BF16Type) else _f16
    text = str(attr)
    payload = text[text.index("<") + 1 : text.rindex(">", 0, text.rindex(" : "))].strip()
    if payload.startswith('"0x'):
        raw = bytes.fromhex(payload[3:-1])
        return [decode(int.from_bytes(raw[i : i + 2], "little")) for i in range(0, len(raw), 2)]
    tokens = payload.replace("[", " ").replace("]", " ").replace(",", " ").split()
    return [decode(int(t, 16)) if t.startswith("0x") else float(t) for t in tokens]


def dense_element(attr: ir.Attribute, index: list[int]) -> float | int | None:
    """The element of a static DenseElementsAttr at ``index`` (None when outside it)."""
    if not isinstance(attr, ir.DenseElementsAttr):
        return None
    type_ = ir.ShapedType(attr.type)
    dims = [type_.get_dim_size(i) for i in range(type_.rank)]
    if len(index) != len(dims) or any(not 0 <= i < d for i, d in zip(index, dims, strict=True)):
        return None
    if attr.is_splat:
        return splat_element(attr)
    offset = 0
    for i, d in zip(index, dims, strict=True):
        offset = offset * d + i
    if isinstance(attr, ir.DenseIntElementsAttr | ir.DenseFPElementsAttr) and not isinstance(
        type_.element_type, ir.BF16Type | ir.F16Type
    ):
        # One element: a large table is never decoded whole.
        value = attr[offset]
        return int(value) if isinstance(value, bool) else value
    return dense_elements(attr)[offset]
