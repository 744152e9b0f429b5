"""MLIR's textual syntax for the values and types Tessera writes: number literals, string
literals, tensor and memref types. The front end, the kernel generators and the lowering all
write IR text through these, so a literal reads back as the same number everywhere.

Types are named by MLIR's element type spelling (``f32``, ``bf16``, ``i64``, ``i1``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

# Bits of each float element type, for the hex form MLIR needs for infinities and NaN.
_FLOAT_BITS = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16}


def float_literal(value: float, element: str) -> str:
    """``value`` as a literal of float ``element``: decimal when finite, else the type's bit
    pattern in hex (MLIR has no decimal spelling of inf or NaN).

    The decimal is Python's shortest round-trip repr of the double, which MLIR rounds
    correctly into the element type; it always holds a '.', since MLIR reads ``1e-06`` as
    the integer 1 followed by junk."""
    value = float(value)
    if math.isfinite(value):
        text = repr(value)
        if "." not in text:
            mantissa, _, exponent = text.partition("e")
            text = f"{mantissa}.0" + (f"e{exponent}" if exponent else "")
        return text
    if element not in _FLOAT_BITS:
        raise ValueError(f"{value} is not a value of element type {element}")
    if element == "f64":
        bits = struct.unpack(">Q", struct.pack(">d", value))[0]
    elif element == "f16":
        bits = struct.unpack(">H", struct.pack(">e", value))[0]
    else:
        # bf16 is the top half of an f32; inf and NaN survive the truncation.
        bits = struct.unpack(">I", struct.pack(">f", value))[0]
        if element == "bf16":
            bits >>= 16
            if math.isnan(value):
                bits |= 0x40  # keep a quiet NaN (its payload may have lived in the low half)
    return f"0x{bits:0{_FLOAT_BITS[element] // 4}X}"


def scalar_literal(value: float | int | bool, element: str) -> str:
    """``value`` as a literal of any element type: ``true``/``false`` for i1, an integer for
    the other integer types, ``float_literal`` for floats."""
    if element == "i1":
        return "true" if value else "false"
    if element in _FLOAT_BITS:
        return float_literal(float(value), element)
    return str(int(value))


def is_float(element: str) -> bool:
    return element in _FLOAT_BITS


def _dims(shape: Sequence[object]) -> str:
    """``4x?x`` for [4, dynamic]: an ``int`` is a static size, anything else (None, a
    symbolic size) is dynamic."""
    return "".join(f"{d if isinstance(d, int) else '?'}x" for d in shape)


def tensor_type(shape: Sequence[object], element: str) -> str:
    """``tensor<4x?xf32>``; a rank-0 shape gives ``tensor<f32>``."""
    return f"tensor<{_dims(shape)}{element}>"


def memref_type(shape: Sequence[object], element: str) -> str:
    """``memref<4x?xf32>``; a rank-0 shape gives ``memref<f32>``."""
    return f"memref<{_dims(shape)}{element}>"


def quote(text: str) -> str:
    """``text`` as an MLIR string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\0A") + '"'
