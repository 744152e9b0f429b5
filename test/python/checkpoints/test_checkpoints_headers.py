"""Corrupt safetensors files: the safetensors library refuses each when it opens the file, before
any tensor is read; the error names the file and says what the library found, and the checkpoint
directory is left byte-identical."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from test_checkpoints_support import KEY, load_fails, save_tiny, shard_of, write_raw_safetensors

REFUSED = "safetensors rejects the file"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A single-file tiny Gemma 2 checkpoint."""
    save_tiny("gemma2-gqa", tmp_path)
    return tmp_path


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    """A sharded tiny Gemma 2 checkpoint."""
    save_tiny("gemma2-gqa", tmp_path, max_shard_size="20KB")
    return tmp_path


def test_truncated_file(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    load_fails(checkpoint, "model.safetensors", REFUSED, "truncated", "not fully covered")


def test_shard_truncated(sharded: Path) -> None:
    shard = shard_of(sharded, KEY)
    shard.write_bytes(shard.read_bytes()[:-8])
    load_fails(sharded, shard.name, REFUSED, "not fully covered")


def _cut_in_header(data: bytes) -> bytes:
    return data[:50]


def _not_json(data: bytes) -> bytes:
    assert data[8:9] == b"{"
    return data[:8] + b"[" + data[9:]  # same length, the JSON no longer parses


def _huge_header_length(data: bytes) -> bytes:
    return struct.pack("<Q", 2**40) + data[8:]


@pytest.mark.parametrize(
    ("corrupt", "found"),
    [
        (_cut_in_header, "invalid header length"),
        (lambda data: b"\x01\x00", "header too small"),
        (_not_json, "invalid JSON"),
        (_huge_header_length, "header too large"),
    ],
    ids=["cut-in-header", "two-bytes", "not-json", "huge-header-length"],
)
def test_broken_file(checkpoint: Path, corrupt: Callable[[bytes], bytes], found: str) -> None:
    path = checkpoint / "model.safetensors"
    path.write_bytes(corrupt(path.read_bytes()))
    load_fails(checkpoint, "model.safetensors", REFUSED, found)


F32 = "F32"


@pytest.mark.parametrize(
    ("header", "data", "found"),
    [
        # Offsets beyond the data section.
        ({KEY: {"dtype": F32, "shape": [2], "data_offsets": [0, 64]}}, b"", "invalid shape"),
        # 8 bytes where a [3] F32 tensor needs 12.
        ({KEY: {"dtype": F32, "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "invalid shape"),
        # Two tensors sharing bytes [4, 8).
        (
            {
                "a": {"dtype": F32, "shape": [2], "data_offsets": [0, 8]},
                KEY: {"dtype": F32, "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
            f"invalid offset for tensor `{KEY}`",
        ),
        # Bytes [0, 4) belong to no tensor.
        (
            {KEY: {"dtype": F32, "shape": [1], "data_offsets": [4, 8]}},
            bytes(8),
            f"invalid offset for tensor `{KEY}`",
        ),
        # Bytes after the last tensor.
        ({KEY: {"dtype": F32, "shape": [1], "data_offsets": [0, 4]}}, bytes(8), "not fully"),
        ({KEY: {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}}, bytes(1), "`F7`"),
        ({KEY: {"dtype": F32, "shape": [-1], "data_offsets": [0, 4]}}, bytes(4), "`-1`"),
    ],
    ids=["beyond-data", "mis-sized", "overlapping", "gap", "bytes-after", "dtype", "shape"],
)
def test_crafted_header(checkpoint: Path, header: dict, data: bytes, found: str) -> None:
    write_raw_safetensors(checkpoint / "model.safetensors", header, data)
    load_fails(checkpoint, "model.safetensors", REFUSED, found)
