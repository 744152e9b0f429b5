"""A MessagePack decoder: the AMDGPU code object's metadata note (``NT_AMDGPU_METADATA``) is a
MessagePack map, and reading it needs nothing more than this (no extension types)."""

from __future__ import annotations

import struct
from typing import Any

from tessera.errors import LoweringError

# Fixed-size scalars: tag → (struct format, bytes).
_SCALARS = {
    0xCA: (">f", 4),
    0xCB: (">d", 8),
    0xCC: (">B", 1),
    0xCD: (">H", 2),
    0xCE: (">I", 4),
    0xCF: (">Q", 8),
    0xD0: (">b", 1),
    0xD1: (">h", 2),
    0xD2: (">i", 4),
    0xD3: (">q", 8),
}
# Length-prefixed items: tag → (kind, bytes of the length).
_SIZED = {
    0xC4: ("bin", 1),
    0xC5: ("bin", 2),
    0xC6: ("bin", 4),
    0xD9: ("str", 1),
    0xDA: ("str", 2),
    0xDB: ("str", 4),
    0xDC: ("array", 2),
    0xDD: ("array", 4),
    0xDE: ("map", 2),
    0xDF: ("map", 4),
}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise LoweringError(
                f"MessagePack data ends inside an item (byte {self.at} of {len(self.data)})"
            )
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def item(self) -> Any:
        tag = self.take(1)[0]
        if tag <= 0x7F:
            return tag
        if tag >= 0xE0:
            return tag - 0x100
        if 0x80 <= tag <= 0x8F:
            return self.compound("map", tag & 0x0F)
        if 0x90 <= tag <= 0x9F:
            return self.compound("array", tag & 0x0F)
        if 0xA0 <= tag <= 0xBF:
            return self.take(tag & 0x1F).decode()
        if tag == 0xC0:
            return None
        if tag in (0xC2, 0xC3):
            return tag == 0xC3
        if tag in _SCALARS:
            fmt, size = _SCALARS[tag]
            return struct.unpack(fmt, self.take(size))[0]
        if tag in _SIZED:
            kind, size = _SIZED[tag]
            count = int.from_bytes(self.take(size), "big")
            if kind == "bin":
                return self.take(count)
            if kind == "str":
                return self.take(count).decode()
            return self.compound(kind, count)
        raise LoweringError(f"MessagePack tag 0x{tag:02x} at byte {self.at - 1} is not supported")

    def compound(self, kind: str, count: int) -> Any:
        if kind == "array":
            return [self.item() for _ in range(count)]
        out = {}
        for _ in range(count):
            key = self.item()
            out[key] = self.item()
        return out


def unpack(data: bytes) -> Any:
    """The one MessagePack item ``data`` holds."""
    reader = _Reader(data)
    value = reader.item()
    if reader.at != len(data):
        raise LoweringError(f"{len(data) - reader.at} bytes follow the MessagePack item")
    return value
