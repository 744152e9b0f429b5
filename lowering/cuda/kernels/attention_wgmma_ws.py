"""The warp-specialized form of the Hopper attention kernel (``attention_wgmma.py``):
``AttentionConfig.warp_specialized``.

A block has one more warpgroup than the compute ones, the last: a producer. Its 128 threads
copy the K/V tiles (cp.async into the swizzled places, as the plain kernel does) and hand each
tile over through mbarriers, while the compute warpgroups only multiply and run the softmax:

    producer, per key tile i (stage i mod stages):
        tile i-1's copies landed (cp.async.wait_group 0), fenced to the async proxy, and
            announced: one arrival per producer thread on full[stage of i-1]
        once i >= stages: wait on empty[stage] (both compute warpgroups done with tile
            i - stages, which used it)
        issue tile i's copies
    compute warpgroup w, per key tile i:
        wait on full[stage]; S, softmax, P·V (``key_tile``); one arrival on empty[stage]

Each producer thread fences its own landed copies before it arrives, so a compute warpgroup
that sees the phase complete reads them through the async proxy (wgmma) safely. Tile i+1's
copies run while tile i is computed; with the plain kernel's block-wide barrier per tile gone,
the two compute warpgroups drift apart freely, one's softmax next to the other's wgmmas.
``setmaxnreg`` hands the producer's registers to the compute warpgroups: 240 each keep their
products and softmax out of local memory (the plain kernel takes 238); the producer's 24
hold its copies' addresses because a tile wholly before the keys' end is copied from one
address a stride further each turn (``copy_rows``; only the last tile clamps each row, and
spills a little doing so). Each role works out its own frame after the reallocation, so
that no value of the compute warpgroups' is live across the split.

Q is copied before the roles split, by the compute threads, and published with one barrier
of the whole block.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import gpu, nvgpu, nvvm, scf

from ..kernel import KernelModule
from . import attention_ir as a
from .attention import AttentionConfig
from .attention_mma import _Frame
from .attention_wgmma import WARPGROUP, _WgmmaKernel, kernel_entry
from .wgmma_ir import mbarrier_group, phase_parity, wait_parity

PRODUCER_REGISTERS = 24
COMPUTE_REGISTERS = 240


class _WarpSpecialized(_WgmmaKernel):
    @property
    def block_threads(self) -> int:
        return self.threads + WARPGROUP

    @property
    def compute_warpgroups(self) -> int:
        return self.threads // WARPGROUP

    def load_q_by_compute_threads(self, tid: ir.Value) -> None:
        """The compute threads copy Q and fence it; the caller's block barrier publishes it."""
        computing = a.if_op(a.cmp("slt", tid, self.threads))
        with ir.InsertionPoint(computing.then_block):
            self.copy_q(self.frame())
            scf.yield_([])

    def produce(self, fr: _Frame, full: ir.Value, empty: ir.Value) -> None:
        cfg = self.cfg
        first, end = self.key_tiles(fr)
        stages = cfg.stages
        loop = a.for_op(first, end, [])
        with ir.InsertionPoint(loop.body):
            copiers = (a.sub(fr.ln.tid, self.threads), WARPGROUP)
            j = loop.induction_variable
            i = a.sub(j, first)
            stage = a.rem(i, stages)
            previous = a.if_op(a.cmp("sgt", i, 0))
            with ir.InsertionPoint(previous.then_block):
                self.announce(full, a.rem(a.add(i, stages - 1), stages))
                scf.yield_([])
            reuse = a.if_op(a.cmp("sge", i, stages))
            with ir.InsertionPoint(reuse.then_block):
                wait_parity(empty, phase_parity(i, stages, behind=1), stage)
                scf.yield_([])
            self.issue_kv(fr, j, stage, end, copiers)
            scf.yield_([])
        last = a.if_op(a.cmp("sgt", end, first))
        with ir.InsertionPoint(last.then_block):
            self.announce(full, a.rem(a.sub(a.sub(end, first), 1), stages))
            scf.yield_([])

    @staticmethod
    def announce(full: ir.Value, stage: ir.Value) -> None:
        """This thread's copies have landed: fence them to the async proxy, then arrive."""
        nvvm.cp_async_wait_group(0)
        nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
        nvgpu.mbarrier_arrive(full, stage)

    def consume(self, fr: _Frame, full: ir.Value, empty: ir.Value) -> None:
        cfg = self.cfg
        first, end = self.key_tiles(fr)
        stages = cfg.stages
        n_acc = cfg.dv // 8
        releaser = a.cmp("eq", a.rem(fr.ln.tid, WARPGROUP), 0)
        loop = a.for_op(first, end, self.initial_carry())
        with ir.InsertionPoint(loop.body):
            acc, states = self._unpack(list(loop.inner_iter_args), n_acc)
            j = loop.induction_variable
            i = a.sub(j, first)
            stage = a.rem(i, stages)
            wait_parity(full, phase_parity(i, stages), stage)
            new_acc, state = self.key_tile(fr, j, stage, acc[0], states[0])
            # Both of the tile's products have completed: its stage may be refilled.
            release = a.if_op(releaser)
            with ir.InsertionPoint(release.then_block):
                nvgpu.mbarrier_arrive(empty, stage)
                scf.yield_([])
            scf.yield_(self._pack([new_acc], [state]))
        acc, states = self._unpack(list(loop.results), n_acc)
        self.store(fr, acc, states)


def emit_warp_specialized_kernel(
    km: KernelModule, cfg: AttentionConfig, name: str
) -> tuple[int, int]:
    """Adds the kernel; returns (threads per block, dynamic shared memory bytes)."""
    kernel = _WarpSpecialized(cfg, {})
    block = kernel_entry(km, kernel, name, kernel.block_threads)
    with ir.InsertionPoint(block):
        tid = gpu.thread_id(gpu.Dimension.x)
        full, empty = mbarrier_group(cfg.stages), mbarrier_group(cfg.stages)
        leader = a.cmp("eq", tid, 0)
        for stage in range(cfg.stages):
            nvgpu.mbarrier_init(full, a.idx(WARPGROUP), a.idx(stage), predicate=leader)
            nvgpu.mbarrier_init(
                empty, a.idx(kernel.compute_warpgroups), a.idx(stage), predicate=leader
            )
        kernel.load_q_by_compute_threads(tid)
        gpu.barrier()  # Q and the initialized barriers, for every warpgroup
        # Each role works out its own frame after its register reallocation.
        role = scf.IfOp(a.cmp("sge", tid, kernel.threads), [], has_else=True)  # type: ignore[call-arg]
        with ir.InsertionPoint(role.then_block):
            nvvm.SetMaxRegisterOp(PRODUCER_REGISTERS, nvvm.SetMaxRegisterAction.decrease)
            kernel.produce(kernel.frame(), full, empty)
            scf.yield_([])
        with ir.InsertionPoint(role.else_block):
            nvvm.SetMaxRegisterOp(COMPUTE_REGISTERS, nvvm.SetMaxRegisterAction.increase)
            kernel.consume(kernel.frame(), full, empty)
            scf.yield_([])
        gpu.ReturnOp([])
    return kernel.block_threads, kernel.smem_bytes
