"""A numpy interpreter for the CUDA target's ``gpu.func`` kernels (before lowering), to check
indexing, fragment layouts, masks, barriers and async copies without a GPU.

How it executes. The threads of a batch of blocks run each op in lock step: a value is a numpy
array over the threads, shape ``(threads, *vector shape)``, or ``(1, ...)`` when every thread
holds the same value (uniform index arithmetic then costs one element). A divergent ``scf.if``
or ``scf.for`` runs under a mask of active threads. Warp-collective ops (``nvgpu.ldmatrix``,
``nvvm.mma.sync``, ``nvgpu.mma.sync``, shuffles) follow the PTX ISA's fragment tables, written
out here independently of the generators' lane arithmetic, and need every lane of the warp.

Lock step alone would hide barrier mistakes (a thread would see another's store at once), so
shared memory is race-checked per barrier phase at warp granularity (the lanes of one warp are
taken to run together): two accesses to one 2-byte word by different warps between two
barriers, one of them a write, race whatever their order; each barrier (and the kernel's end)
checks the phase's accesses at once and names both ops. A barrier under control flow that
diverges within a block is a fault. ``nvgpu.device_async_copy`` lands only when an
``nvgpu.device_async_wait`` of the issuing thread retires its group (per-thread commit counters,
as ``cp.async.wait_group`` counts) and then counts as the issuing warp's write; touching its
destination while it is in flight is a fault, as is reading shared memory nothing has written.

Global memory: every active access must be in bounds of its buffer (the descriptor's size) and
as aligned as its ``alignment`` attribute (cp.async: its size) says; within one launch, no
element of a buffer the kernel writes may be stored twice, or stored by one thread and touched
by another (an in-place kernel's race); no element of an ``unwritten`` buffer (an arena slice,
an output) may be read before some launch stored it; a kernel with a ``griddepcontrol.wait``
touches no global buffer before it, but for loads of the parameters its
``tessera.reads_before_wait`` attribute names (weights: binding an ``unwritten`` buffer there
is a fault). Launches are checked against the kernel's
``known_block_size``, the grid limits and the chip's shared-memory limit. Faults raise
``KernelFault`` naming the kernel, the op and its location, the block and thread or warp, and
the address. ``launch(stats=...)`` also counts shared-memory bank conflicts of ldmatrix and
16-byte cp.async.

Arithmetic is float32 per op (bf16/f16 values are held as float32 and rounded to nearest even
after each op, as the GPU does); transcendentals (math dialect, libdevice calls, ``ex2.approx``)
are computed in float64 and rounded once; ``mma.sync`` accumulates in float64 and rounds once.

Ops are compiled once per kernel into closures over register slots (``Kernel``); ``launch``
runs them. ``run_kernel`` runs a generator's ``KernelInfo`` with parameters bound by name.

The package: ``kinds`` (element types, limits, ``KernelFault``), ``memory`` (buffers, shared
memory and access logs), ``state`` (one batch of blocks in flight), ``access`` (addressing, loads,
stores, race checks), ``driver`` (``Kernel``: compiling ops to steps, launching; the rule table),
and one module of rules per group of ops: ``arith_ops``, ``math_ops``, ``vector_ops``, ``gpu_ops``,
``control_flow``, ``warp_ops``, ``async_copy``, ``grid_ops`` (griddepcontrol).
"""

# Importing the rule modules registers their rules with the driver.
from . import (  # noqa: F401
    arith_ops,
    async_copy,
    control_flow,
    gpu_ops,
    grid_ops,
    math_ops,
    vector_ops,
    warp_ops,
)
from .driver import Kernel, kernels_in, run_kernel
from .kinds import KINDS, KernelFault, bf16_bits_to_f32, f32_to_bf16_bits, round_to
from .memory import Buffer, Storage

__all__ = [
    "KINDS",
    "Buffer",
    "Kernel",
    "KernelFault",
    "Storage",
    "bf16_bits_to_f32",
    "f32_to_bf16_bits",
    "kernels_in",
    "round_to",
    "run_kernel",
]
