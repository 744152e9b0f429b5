"""Rules: programmatic dependent launch (``griddepcontrol``), global addresses as integers, and
the L2 bulk prefetch.

A kernel that holds a ``griddepcontrol.wait`` may start before the kernel before it ends, so
it must not touch global memory before the wait: an access there is a fault (``access.py``
asks ``waited``), but for the buffers the launch marks early (weights).

A global buffer's address is synthetic: the n-th buffer whose address a launch takes lives in
region n (the region number in bits 40 and up) at its storage byte offset, so integer
arithmetic on it works and a prefetch can be traced back to its buffer. A prefetch must be
16-byte aligned, a positive multiple of 16 bytes, inside its buffer's bytes widened to 16-byte
bounds, and, before the kernel's wait, of a buffer the launch marks early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from mlir import ir

from .driver import rule
from .memory import Buffer

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op, _Run

REGION_SHIFT = 40


@rule("nvvm.griddepcontrol")
def _griddepcontrol(k: Kernel, op: ir.Operation, info: _Op) -> Step | None:
    if "wait" not in str(op.attributes["kind"]):
        return None  # launch_dependents: lets the next kernel launch; nothing to model
    k.waits = True

    def wait(run: _Run) -> None:
        run.waited = True

    return wait


@rule("memref.extract_aligned_pointer_as_index")
def _pointer(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    (source,) = k.ins(op)
    out = k.slot(op.results[0])

    def pointer(run: _Run) -> None:
        buffer = run.regs[source]
        if not isinstance(buffer, Buffer):
            raise info.fault(run, "takes the address of global buffers only here")
        region = run.launch.region_of(buffer)
        run.regs[out] = np.array([(region << REGION_SHIFT) + buffer.offset], dtype=np.int64)

    return pointer


@rule("llvm.inttoptr", "llvm.addrspacecast")
def _same_address(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    (source,) = k.ins(op)
    out = k.slot(op.results[0])

    def same(run: _Run) -> None:
        run.regs[out] = run.regs[source]

    return same


@rule("nvvm.cp.async.bulk.prefetch")
def _prefetch(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    address, size = k.ins(op)[:2]

    def prefetch(run: _Run) -> None:
        at = run.lanes(run.regs[address]).astype(np.int64)
        length = run.lanes(run.regs[size]).astype(np.int64)
        if not len(at):
            return
        bad = (at % 16 != 0) | (length % 16 != 0) | (length <= 0)
        if bad.any():
            raise info.fault(
                run,
                f"{run.where(bad)} prefetches {run.first(length, bad)} bytes at byte "
                f"{run.first(at % (1 << REGION_SHIFT), bad)}: the address and size must be "
                "positive multiples of 16",
            )
        regions = at >> REGION_SHIFT
        for region in np.unique(regions):
            buffer = run.launch.regions.get(int(region))
            if buffer is None:
                raise info.fault(run, "prefetches an address that is no buffer's")
            if not run.waited and id(buffer) not in run.launch.early:
                raise info.fault(
                    run,
                    f"prefetches {buffer.name} before the kernel's griddepcontrol.wait, but "
                    "the launch does not mark it early (a weight)",
                )
            mine = regions == region
            start = at[mine] - (int(region) << REGION_SHIFT)
            low = buffer.offset // 16 * 16
            high = -(-(buffer.offset + buffer.size * buffer.kind.size) // 16) * 16
            outside = (start < low) | (start + length[mine] > high)
            if outside.any():
                raise info.fault(
                    run,
                    f"prefetches bytes {run.first(start, outside)}.."
                    f"+{run.first(length[mine], outside)} of {buffer.name}, which spans "
                    f"bytes {buffer.offset}..{buffer.offset + buffer.size * buffer.kind.size}",
                )
            run.launch.prefetched.append((buffer, start, length[mine]))

    return prefetch
