"""Corrupt safetensors files: every header problem is reported naming the file and tensor before
any tensor is read, and the checkpoint directory is left byte-identical."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from test_checkpoints_support import KEY, load_fails, save_tiny, shard_of, write_raw_safetensors


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
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    last = max((v["data_offsets"][1], k) for k, v in header.items() if k != "__metadata__")[1]
    path.write_bytes(data[:-100])
    load_fails(checkpoint, "model.safetensors", f"key '{last}'", "truncated")


def test_file_cut_inside_its_header(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    load_fails(checkpoint, "model.safetensors", "runs past the end of the file (50 bytes)")


def test_file_shorter_than_header_length(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").write_bytes(b"\x01\x00")
    load_fails(checkpoint, "model.safetensors", "too short")


def test_header_is_not_json(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    assert data[8:9] == b"{"
    data[8:9] = b"["  # same length, the JSON no longer parses
    path.write_bytes(bytes(data))
    load_fails(checkpoint, "model.safetensors", "header is not valid JSON")


def test_header_length_beyond_limit(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    load_fails(checkpoint, "model.safetensors", "exceeds")


def test_shard_truncated(sharded: Path) -> None:
    shard = shard_of(sharded, KEY)
    shard.write_bytes(shard.read_bytes()[:-8])
    load_fails(sharded, shard.name, "truncated")


def _replace_file(directory: Path, header: dict, data: bytes) -> None:
    """Replace a checkpoint's weights by one crafted file (the header is checked first)."""
    write_raw_safetensors(directory / "model.safetensors", header, data)


def test_offsets_beyond_the_data(checkpoint: Path) -> None:
    _replace_file(checkpoint, {KEY: {"dtype": "F32", "shape": [2], "data_offsets": [0, 64]}}, b"")
    load_fails(checkpoint, "model.safetensors", KEY, "run past the end")


def test_byte_count_disagrees_with_shape(checkpoint: Path) -> None:
    header = {KEY: {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    _replace_file(checkpoint, header, bytes(8))
    load_fails(checkpoint, "model.safetensors", KEY, "needs 12")


def test_overlapping_tensors(checkpoint: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        KEY: {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    _replace_file(checkpoint, header, bytes(12))
    load_fails(checkpoint, "model.safetensors", KEY, "overlap those of tensor 'a' [0, 8)")


def test_gap_between_tensors(checkpoint: Path) -> None:
    _replace_file(
        checkpoint, {KEY: {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)
    )
    load_fails(checkpoint, "model.safetensors", KEY, "leave bytes [0, 4) unused")


def test_bytes_after_last_tensor(checkpoint: Path) -> None:
    _replace_file(
        checkpoint, {KEY: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)
    )
    load_fails(checkpoint, "model.safetensors", "4 bytes after the last tensor")


def test_unknown_dtype_in_header(checkpoint: Path) -> None:
    _replace_file(
        checkpoint, {KEY: {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)
    )
    load_fails(checkpoint, "model.safetensors", KEY, "unknown dtype 'F7'")


def test_bad_shape_in_header(checkpoint: Path) -> None:
    header = {KEY: {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}
    _replace_file(checkpoint, header, bytes(4))
    load_fails(checkpoint, "model.safetensors", KEY, "shape")


def test_tensor_named_twice_in_header(checkpoint: Path) -> None:
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    encoded = f'{{"{KEY}": {entry}, "{KEY}": {entry}}}'.encode()
    path = checkpoint / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(4))
    load_fails(checkpoint, "model.safetensors", KEY, "twice")
