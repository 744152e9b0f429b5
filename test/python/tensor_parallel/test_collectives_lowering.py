"""The CPU lowering of the collectives, run through the JIT with a callback written here in
place of the runtime's: what the compiled code passes it (kind, dtype code, buffers, extents)
and that the result is what the callback wrote. A null communicator and a failed collective
stop the process with a message (checked in a child process)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest
import torch
from test_cpu_support import run
from test_tensor_parallel_support import CPU_TESTS

from tessera.runtime.collectives import (
    ALL_GATHER,
    ALL_REDUCE,
    DTYPE_CODES,
    CollectiveFunction,
)

SOURCE = """
func.func @forward(%x: tensor<?x3x4x{t}>, %c: tensor<1xi64>) -> tensor<?x3x8x{t}> {{
  %0 = "tessera.collective.all_reduce"(%x, %c) {{ranks = 2 : i64}}
      : (tensor<?x3x4x{t}>, tensor<1xi64>) -> tensor<?x3x4x{t}>
  %1 = "tessera.collective.all_gather"(%0, %c) {{axis = 2 : i64, ranks = 2 : i64}}
      : (tensor<?x3x4x{t}>, tensor<1xi64>) -> tensor<?x3x8x{t}>
  return %1 : tensor<?x3x8x{t}>
}}
"""
TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def _memory(address: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    size = count * torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer((ctypes.c_byte * size).from_address(address), dtype=dtype)


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
def test_the_code_calls_the_communicator_with_its_buffers(dtype: str) -> None:
    element = TORCH_DTYPES[dtype]
    calls: list[tuple[int, int, int, int]] = []

    def collective(kind: int, code: int, source: int, target: int, outer: int, inner: int) -> int:
        # Stands for two ranks holding the same tensor: the sum doubles it, the gather puts
        # it beside itself negated.
        calls.append((kind, code, outer, inner))
        x = _memory(source, outer * inner, element).view(outer, inner)
        if kind == ALL_REDUCE:
            _memory(target, outer * inner, element).view(outer, inner).copy_(2 * x)
        else:
            out = _memory(target, 2 * outer * inner, element).view(outer, 2, inner)
            out[:, 0].copy_(x)
            out[:, 1].copy_(-x)
        return 0

    callback = CollectiveFunction(collective)
    handle = torch.tensor([ctypes.cast(callback, ctypes.c_void_p).value], dtype=torch.int64)
    x = torch.randn(2, 3, 4).to(element)
    result = run(SOURCE.format(t=dtype), [x, handle])
    code = DTYPE_CODES[dtype]
    # all_reduce: [B·3·... , last axis]; all_gather along axis 2: [B·3, 4].
    assert calls == [(ALL_REDUCE, code, 6, 4), (ALL_GATHER, code, 6, 4)]
    assert torch.equal(result, torch.cat([2 * x, -2 * x], dim=2))


_CHILD = """
import ctypes, sys, torch
sys.path.insert(0, {cpu_tests!r})
from test_cpu_support import run
from tessera.runtime.collectives import CollectiveFunction

callback = CollectiveFunction(lambda *arguments: {status})
address = {address}
if address is None:
    address = ctypes.cast(callback, ctypes.c_void_p).value
source = '''{source}'''
run(source, [torch.zeros(1, 3, 4), torch.tensor([address], dtype=torch.int64)])
print("returned")
"""


@pytest.mark.parametrize(
    "address,status,message",
    [
        (0, 0, "tessera: a collective ran without a communicator"),
        (None, 1, "tessera: a collective failed (see the error above)"),
    ],
)
def test_a_missing_communicator_or_a_failed_collective_stops_the_process(
    address: int | None, status: int, message: str
) -> None:
    child = _CHILD.format(
        cpu_tests=str(CPU_TESTS), status=status, address=address, source=SOURCE.format(t="f32")
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(child)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0
    assert message in done.stderr + done.stdout
    assert "returned" not in done.stdout
