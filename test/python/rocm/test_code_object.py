"""The code-object reader and its limit check on hand-made inputs: the MessagePack decoder,
refusals of malformed objects, and each limit of ``check_limits`` (a real code object is
checked in ``test_rocm_target.py``)."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from tessera.errors import LoweringError
from tessera.lowering.rocm import code_object
from tessera.lowering.rocm.chips import CHIPS
from tessera.lowering.rocm.msgpack import unpack


def test_msgpack_decodes_every_kind_the_metadata_uses() -> None:
    # {"a": [1, -1, 300, "x"], "b": true, "c": nil, 7: 2.5 (f64), "d": -200 (int16)}
    data = (
        b"\x85"
        + b"\xa1a\x94\x01\xff\xcd\x01\x2c\xa1x"
        + b"\xa1b\xc3"
        + b"\xa1c\xc0"
        + b"\x07\xcb"
        + struct.pack(">d", 2.5)
        + b"\xa1d\xd1"
        + struct.pack(">h", -200)
    )
    assert unpack(data) == {"a": [1, -1, 300, "x"], "b": True, "c": None, 7: 2.5, "d": -200}
    long = "k" * 40
    assert unpack(b"\xd9\x28" + long.encode()) == long
    assert unpack(b"\xdc\x00\x02\x01\x02") == [1, 2]
    assert unpack(b"\xc4\x03abc") == b"abc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x92\x01", "ends inside an item"),
        (b"\xc1", "tag 0xc1"),
        (b"\x01\x02", "1 bytes follow"),
    ],
)
def test_msgpack_refuses_malformed_data(data: bytes, message: str) -> None:
    with pytest.raises(LoweringError, match=message):
        unpack(data)


def test_reader_refuses_what_is_no_code_object() -> None:
    with pytest.raises(LoweringError, match="not an ELF64 file"):
        code_object.read(b"MZ" + bytes(100))
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    header[0x12:0x14] = struct.pack("<H", 224)
    header[0x28:0x30] = struct.pack("<Q", 64)
    header[0x3A:0x3E] = struct.pack("<HH", 64, 0)
    with pytest.raises(LoweringError, match="no NT_AMDGPU_METADATA note"):
        code_object.read(bytes(header))


GOOD = code_object.KernelResources(
    name="k",
    symbol="k.kd",
    vgprs=64,
    sgprs=20,
    agprs=0,
    lds_bytes=1024,
    scratch_bytes=0,
    vgpr_spills=0,
    sgpr_spills=0,
    wavefront=64,
    max_workgroup=256,
)


def _code(**changes: object) -> code_object.CodeObject:
    kernel = dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]
    return code_object.CodeObject(224, "amdgcn-amd-amdhsa--gfx942", ("k", "k.kd"), (kernel,), {})


def test_limits_accept_a_kernel_within_them() -> None:
    code_object.check_limits(_code(), CHIPS["gfx942"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vgprs": 300, "agprs": 256}, "556 VGPRs > 512"),
        ({"sgprs": 110}, "110 SGPRs > 102"),
        ({"lds_bytes": 70000}, "70000 bytes of LDS > 65536"),
        ({"vgpr_spills": 3, "scratch_bytes": 12}, "spills to scratch"),
        ({"wavefront": 32}, "wavefront 32, gfx942 runs 64"),
        ({"symbol": "other.kd"}, "no dynamic symbol other.kd"),
    ],
)
def test_limits_refuse_each_excess(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LoweringError, match=message):
        code_object.check_limits(_code(**changes), CHIPS["gfx942"])


def test_limits_refuse_another_chip() -> None:
    with pytest.raises(LoweringError, match="not gfx90a"):
        code_object.check_limits(_code(), CHIPS["gfx90a"])
