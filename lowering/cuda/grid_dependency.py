"""Programmatic dependent launch (sm_90 and newer): a kernel starts while the one before it on
the stream is still finishing.

A kernel launched with CUDA's programmatic stream serialization may begin once every block of
the kernel before it has signalled (``griddepcontrol.launch_dependents``), not only once that
kernel has ended. It must then wait (``griddepcontrol.wait``: the grids before it complete and
their writes visible) before it reads what they wrote or writes what they might still read.
``add_grid_dependency_control`` gives every kernel of a module both at its top.

Why: the decode step is a few hundred launches of a few microseconds each, and the time from
one kernel's last block to the next kernel's first is a large share of the step. With the
signal at each kernel's top, the next kernel is launched as soon as the current one's last
blocks are placed, and its blocks fill the SMs the current one frees. (Prefetching a decode
GEMV's weight rows into L2 before its wait was tried on an H100 and taken out: launched alone,
the GEMV with it read at 0.86x cuBLAS in that run, where the build without it had read 1.02x
in an earlier one, and its whole matrices' prefetches exceed L2;
bench/results/h100-2026-12-07-gemv-tiles-prefetch.json.)

A kernel may instead place the wait itself, after loads of weights (``READS_BEFORE_WAIT``:
the indices of the parameters it reads before the wait): no kernel writes a weight, so those
loads need not wait, and a decode GEMV's first loads then stream while the kernel before it
finishes. The plan binds such parameters only to weights (``LaunchPlan.launch``).

The wait is a no-op for a kernel launched without the attribute (the tuning and check harnesses
launch the same kernels plainly), so the kernels are correct either way; the manifest marks the
launches (``KernelLaunch.programmatic``) and the runtime launches them so unless
TESSERA_PROGRAMMATIC_LAUNCH=0.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import nvvm

from .kernel import READS_BEFORE_WAIT, KernelModule


def wait_for_predecessors() -> None:
    """The wait, at the insertion point, in a kernel marked ``READS_BEFORE_WAIT``."""
    nvvm.griddepcontrol(nvvm.GridDepActionKind.wait)


def add_grid_dependency_control(kernels: KernelModule) -> None:
    """Gives every kernel of ``kernels`` the launch signal at its top, and the wait there too
    unless it places its own (``READS_BEFORE_WAIT``). Only for devices with programmatic
    launch (``Device.programmatic_launch``)."""
    if not kernels.device.programmatic_launch:
        raise ValueError(f"{kernels.arch} has no programmatic dependent launch")
    for op in kernels.body.operations:
        if op.operation.name != "gpu.func" or "gpu.kernel" not in op.attributes:
            continue
        with ir.InsertionPoint.at_block_begin(op.regions[0].blocks[0]):
            nvvm.griddepcontrol(nvvm.GridDepActionKind.launch_dependents)
            if READS_BEFORE_WAIT not in op.attributes:
                wait_for_predecessors()
