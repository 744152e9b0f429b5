"""What the kernel interpreter (``test/python/cuda/gpu_interpreter``) needs besides NVIDIA's ops
to run the ROCm target's kernels: the AMD matrix instructions and the LLVM intrinsics that
``tessera-rocm-expand-math`` emits. Importing this module registers them.

The operand layouts are written out from the ISA documents' tables, independently of the
generator's lane arithmetic (``lowering/rocm/kernels/gemm_matrix.py``):

- ``amdgpu.mfma`` 16x16x16 (wave64): lane l holds A[l % 16][4·(l / 16) + i] and
  B[4·(l / 16) + i][l % 16] (i = 0..3); C/D register r of lane l is D[4·(l / 16) + r][l % 16].
- ``amdgpu.wmma`` 16x16x16 (wave32): lane l holds A[l % 16][k] and B[k][l % 16] for all 16 k,
  lanes 16-31 repeating lanes 0-15 (a fault otherwise); register r is D[2·r + l / 16][l % 16].

Products are summed in float64 and rounded once to f32, as ``mma.sync`` is here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from gpu_interpreter import driver
from gpu_interpreter import math_ops as interpreted_math
from mlir import ir

if TYPE_CHECKING:
    from gpu_interpreter.driver import Kernel
    from gpu_interpreter.state import Step, _Op, _Run

_VECTOR_LANES = (2, 4, 8, 16)
for _name, _fn in (("exp2", np.exp2), ("log2", np.log2), ("sqrt", np.sqrt)):
    interpreted_math.INTRINSICS[f"llvm.{_name}.f32"] = _fn
    for _lanes in _VECTOR_LANES:
        interpreted_math.INTRINSICS[f"llvm.{_name}.v{_lanes}f32"] = _fn


def _waves(run: _Run, info: _Op, wave: int) -> int:
    """Checks that whole waves execute the op; returns how many."""
    if run.T % wave:
        raise info.fault(run, f"blocks of {run.T} threads are not whole waves of {wave}")
    if not run.full:
        lanes = run.active.reshape(-1, wave)
        if (lanes.any(axis=1) & ~lanes.all(axis=1)).any():
            raise info.fault(run, f"a matrix instruction needs all {wave} lanes of its wave")
    return run.T // wave


def _shape(op: ir.Operation) -> tuple[int, int, int]:
    return tuple(ir.IntegerAttr(op.attributes[n]).value for n in ("m", "n", "k"))  # type: ignore[return-value]


@driver.rule("amdgpu.mfma")
def _mfma(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    if _shape(op) != (16, 16, 16):
        raise NotImplementedError(f"{k.name}: amdgpu.mfma of shape {_shape(op)}")
    a, b, c = k.ins(op)
    out = k.slot(op.results[0])
    lane = np.arange(64)
    row = lane % 16
    ks = 4 * (lane // 16)[:, None] + np.arange(4)[None, :]

    def step(run: _Run) -> None:
        waves = _waves(run, info, 64)
        r = run.regs
        A, B, C = (np.broadcast_to(r[i], (run.T, 4)).reshape(waves, 64, 4) for i in (a, b, c))
        am = np.zeros((waves, 16, 16))
        bm = np.zeros((waves, 16, 16))
        cm = np.zeros((waves, 16, 16))
        am[:, row[:, None], ks] = A
        bm[:, ks, row[:, None]] = B
        cm[:, ks, row[:, None]] = C
        d = am @ bm + cm
        r[out] = d[:, ks, row[:, None]].reshape(run.T, 4).astype(np.float32)

    return step


@driver.rule("amdgpu.wmma")
def _wmma(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    if _shape(op) != (16, 16, 16):
        raise NotImplementedError(f"{k.name}: amdgpu.wmma of shape {_shape(op)}")
    a, b, c = k.ins(op)
    out = k.slot(op.results[0])
    lane = np.arange(32)
    rows = 2 * np.arange(8)[None, :] + (lane // 16)[:, None]

    def step(run: _Run) -> None:
        waves = _waves(run, info, 32)
        r = run.regs
        A, B = (np.broadcast_to(r[i], (run.T, 16)).reshape(waves, 32, 16) for i in (a, b))
        C = np.broadcast_to(r[c], (run.T, 8)).reshape(waves, 32, 8)
        for name, value in (("A", A), ("B", B)):
            if not np.array_equal(value[:, :16], value[:, 16:]):
                raise info.fault(
                    run, f"lanes 16-31 do not repeat lanes 0-15 of WMMA operand {name}"
                )
        am = A[:, :16, :].astype(np.float64)  # [wave, row, k]
        bm = np.transpose(B[:, :16, :], (0, 2, 1)).astype(np.float64)  # [wave, k, column]
        cm = np.zeros((waves, 16, 16))
        cm[:, rows, (lane % 16)[:, None]] = C
        d = am @ bm + cm
        r[out] = d[:, rows, (lane % 16)[:, None]].reshape(run.T, 8).astype(np.float32)

    return step
