"""Read and validate a safetensors file's header without trusting it.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``) and the data
section; offsets count from the start of the data section. The safetensors library parses the
header as well, but its messages name neither the file nor the tensor, and a file cut short is
only noticed when the missing tensor is read. Checking every header here first means a bad file
is reported (file and tensor named) before a single tensor is read, so a load never stops half
way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tessera.errors import CheckpointError

# The safetensors library refuses headers above 100 MB; so do we, before reading them.
MAX_HEADER_BYTES = 100_000_000

# Bits per element of every dtype the safetensors format defines (F4 and F6 pack below a byte).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4,
    "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32,
    "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip

# Floating-point dtypes whose values torch converts exactly into any wider float and by
# round-to-nearest-even into a narrower one. F8_E8M0 (a scale format) and the sub-byte floats
# only appear in quantised checkpoints, which carry scales a plain conversion would ignore.
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
}  # fmt: skip

# Non-float dtypes that have a torch equivalent (a model buffer of such a dtype must match it).
OTHER_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "I32": torch.int32, "I64": torch.int64,
}  # fmt: skip


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it."""

    name: str
    dtype: str  # the safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section, end exclusive
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of the safetensors file at ``path``, after checking the header is well formed
    and every tensor's bytes lie inside the file, match its dtype and shape, and follow the
    previous tensor's.

    Opens the file read-only and reads only its header. Raises CheckpointError naming the file
    (and the tensor, where one is at fault)."""
    where = str(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as stream:
            length_bytes = stream.read(8)
            if len(length_bytes) < 8:
                raise CheckpointError(
                    f"file is {file_size} bytes, too short for the 8-byte header length of a "
                    "safetensors file",
                    path=where,
                )
            header_length = int.from_bytes(length_bytes, "little")
            if header_length > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"header length {header_length} exceeds the {MAX_HEADER_BYTES}-byte limit "
                    "of the safetensors format (the file is corrupt or not a safetensors file)",
                    path=where,
                )
            if 8 + header_length > file_size:
                raise CheckpointError(
                    f"header length {header_length} runs past the end of the file "
                    f"({file_size} bytes): the file is truncated or not a safetensors file",
                    path=where,
                )
            header_bytes = stream.read(header_length)
    except OSError as error:
        raise CheckpointError(
            f"cannot read the file: {error.strerror or error}", path=where
        ) from error

    header = _parse_header_json(header_bytes, where)
    data_size = file_size - 8 - header_length
    entries: dict[str, TensorEntry] = {}
    for name, description in header.items():
        if name == "__metadata__":
            _check_metadata(description, where)
            continue
        entries[name] = _parse_entry(name, description, data_size, where)
    _check_back_to_back(entries, data_size, where)
    return entries


def _parse_header_json(header_bytes: bytes, where: str) -> dict[str, Any]:
    """The header as a JSON object whose names are unique."""

    def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise CheckpointError(f"header names '{name}' twice", path=where)
            result[name] = value
        return result

    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=unique_object)
    except UnicodeDecodeError as error:
        raise CheckpointError(f"header is not UTF-8 text: {error}", path=where) from error
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"header is not valid JSON ({error.msg} at byte {error.pos} of the header)", path=where
        ) from error
    if not isinstance(header, dict):
        raise CheckpointError(
            f"header is a JSON {type(header).__name__}, expected an object", path=where
        )
    return header


def _check_metadata(metadata: Any, where: str) -> None:
    """``__metadata__`` must map strings to strings."""
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise CheckpointError("header's __metadata__ is not an object of strings", path=where)


def _is_count(value: Any) -> bool:
    """A non-negative JSON integer (``bool`` is an int subclass in Python; JSON true is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_entry(name: str, description: Any, data_size: int, where: str) -> TensorEntry:
    """One tensor's header entry, checked against the data section's size."""
    if not isinstance(description, dict):
        raise CheckpointError("header entry is not an object", path=where, key=name)
    dtype = description.get("dtype")
    shape = description.get("shape")
    offsets = description.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CheckpointError(
            f"unknown dtype {dtype!r} (the safetensors dtypes are {', '.join(DTYPE_BITS)})",
            path=where,
            key=name,
        )
    if not isinstance(shape, list) or not all(_is_count(size) for size in shape):
        raise CheckpointError(
            f"shape {shape!r} is not a list of non-negative integers", path=where, key=name
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(offset) for offset in offsets)
        or offsets[0] > offsets[1]
    ):
        raise CheckpointError(
            f"data_offsets {offsets!r} is not a pair [begin, end] with 0 <= begin <= end",
            path=where,
            key=name,
        )
    begin, end = offsets
    if end > data_size:
        raise CheckpointError(
            f"data bytes [{begin}, {end}) run past the end of the file's data section "
            f"({data_size} bytes): the file is truncated (or its header is corrupt)",
            path=where,
            key=name,
        )
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits != (end - begin) * 8:
        raise CheckpointError(
            f"holds {end - begin} bytes, but a {dtype} tensor of shape {shape} needs {bits / 8:g}",
            path=where,
            key=name,
        )
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _check_back_to_back(entries: dict[str, TensorEntry], data_size: int, where: str) -> None:
    """Tensors tile the data section exactly, in offset order, as the format requires (the
    safetensors library refuses anything else); so no two tensors can share bytes."""
    position = 0
    previous: TensorEntry | None = None
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin < position and previous is not None:
            raise CheckpointError(
                f"data bytes [{entry.begin}, {entry.end}) overlap those of tensor "
                f"'{previous.name}' [{previous.begin}, {previous.end})",
                path=where,
                key=entry.name,
            )
        if entry.begin > position:
            raise CheckpointError(
                f"data bytes [{entry.begin}, {entry.end}) leave bytes [{position}, "
                f"{entry.begin}) unused; safetensors stores tensors back to back",
                path=where,
                key=entry.name,
            )
        position = entry.end
        previous = entry
    if position != data_size:
        raise CheckpointError(
            f"data section has {data_size - position} bytes after the last tensor (the header "
            "does not describe the whole file)",
            path=where,
        )
