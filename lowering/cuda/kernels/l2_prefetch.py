"""Weights asked into L2 ahead of the kernels that read them (sm_90 and newer).

A decode step alternates between kernels that stream weights at the card's bandwidth (the
GEMVs) and kernels bound by latency (the attention prologue, paged attention and its combine,
the norms), during which little weight traffic is left to serve. This kernel, launched where
such a stretch begins (``weight_prefetch.py`` places it), asks L2 for byte ranges of the
weights the next GEMVs read first, so that DRAM moves them while the latency-bound kernels
run.

Each lane issues one ``cp.async.bulk.prefetch.L2`` of a chunk of one range: the chunks are
spread over blocks of one warp each, so that the requests leave from many SMs' copy engines
rather than queue behind one. A prefetch is a hint: it writes nothing and needs no result.

Weights are never written by a kernel, so the prefetches are issued before the grid wait; the
wait follows (every block has it), so the kernel ends only after the kernels before it, and the
kernels after it, which wait for it, still wait for those too.

A chunk is widened to 16-byte bounds, as the instruction requires; the widening stays inside
the 16-byte granules that hold the range's first and last bytes, so it touches no page the
weight does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, llvm, memref, nvvm, scf

from ..grid_dependency import wait_for_predecessors
from ..kernel import KernelInfo, KernelModule, Param
from . import attention_ir as a

WARP = 32
# Bytes one prefetch asks for: small enough that a stretch's ranges spread over tens of SMs.
CHUNK_BYTES = 32 * 1024
GRANULE = 16


@dataclass(frozen=True)
class PrefetchRange:
    """Bytes ``start`` .. ``start + length`` of a weight of element type ``dtype``."""

    dtype: str
    start: int
    length: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.length <= 0:
            raise ValueError(f"a prefetch range needs start >= 0 and length > 0, got {self}")


@dataclass(frozen=True)
class L2PrefetchConfig:
    """The ranges (one weight parameter each, in order) and the bytes of one prefetch."""

    ranges: tuple[PrefetchRange, ...]
    chunk: int = CHUNK_BYTES

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("an L2 prefetch needs at least one range")
        if self.chunk <= 0 or self.chunk % GRANULE:
            raise ValueError(f"a prefetch chunk is a positive multiple of 16, got {self.chunk}")

    def chunks(self, r: int) -> int:
        """Requests of range ``r``: enough for its bytes widened to 16-byte bounds wherever
        the weight starts (a lane past them asks for nothing)."""
        return -(-(self.ranges[r].length + 2 * (GRANULE - 1)) // self.chunk)

    @property
    def total_chunks(self) -> int:
        return sum(self.chunks(r) for r in range(len(self.ranges)))


def build_l2_prefetch(km: KernelModule, cfg: L2PrefetchConfig) -> KernelInfo:
    """Adds the kernel for ``cfg`` to ``km`` (once) and says how to launch it. Params: one
    buffer ``w<i>`` per range. Grid: one warp a block, a chunk a lane."""
    tag = hashlib.sha256(repr(cfg).encode()).hexdigest()[:8]
    name = f"tessera_l2_prefetch_r{len(cfg.ranges)}_{tag}"
    params = tuple(Param.buffer(f"w{i}", r.dtype) for i, r in enumerate(cfg.ranges))
    blocks = -(-cfg.total_chunks // WARP)
    info = KernelInfo(
        name,
        params,
        (str(blocks), "1", "1"),
        (WARP, 1, 1),
        reads_before_wait=tuple(p.name for p in params),
    )
    if km.has_kernel(name):
        return info
    args, block = km.add_launched_kernel(info)
    with ir.InsertionPoint(block):
        chunk = a.add(a.mul(gpu.block_id(gpu.Dimension.x), WARP), gpu.thread_id(gpu.Dimension.x))
        first = 0
        for i, prefetch in enumerate(cfg.ranges):
            count = cfg.chunks(i)
            mine = a.both(a.cmp("sge", chunk, first), a.cmp("slt", chunk, first + count))
            inside = a.if_op(mine)
            with ir.InsertionPoint(inside.then_block):
                _prefetch_chunk(args[f"w{i}"], prefetch, a.sub(chunk, first), cfg.chunk)
                scf.yield_([])
            first += count
        wait_for_predecessors()
        gpu.ReturnOp([])
    return info


def _prefetch_chunk(weight: ir.Value, prefetch: PrefetchRange, k: ir.Value, chunk: int) -> None:
    """Chunk ``k`` of ``prefetch`` over ``weight``: the range widened to 16-byte bounds (in
    addresses: the weight itself may start anywhere), cut at multiples of ``chunk`` from its
    first granule, so neighbouring chunks share no granule. A lane past the widened range
    asks for nothing."""
    i32, i64 = ir.IntegerType.get_signless(32), ir.IntegerType.get_signless(64)
    mask = a.const(-GRANULE, i64)
    base = arith.index_cast(i64, memref.extract_aligned_pointer_as_index(weight))
    first = arith.andi(arith.addi(base, a.const(prefetch.start, i64)), mask)
    end = arith.andi(
        arith.addi(base, a.const(prefetch.start + prefetch.length + GRANULE - 1, i64)), mask
    )
    low = arith.addi(first, arith.muli(arith.index_cast(i64, k), a.const(chunk, i64)))
    high = arith.minsi(arith.addi(low, a.const(chunk, i64)), end)
    inside = a.if_op(arith.cmpi(arith.CmpIPredicate.slt, low, end))
    with ir.InsertionPoint(inside.then_block):
        size = arith.trunci(i32, arith.subi(high, low))
        generic = llvm.inttoptr(ir.Type.parse("!llvm.ptr"), low)
        global_ = llvm.addrspacecast(ir.Type.parse("!llvm.ptr<1>"), generic)
        nvvm.cp_async_bulk_prefetch(global_, size)
        scf.yield_([])
