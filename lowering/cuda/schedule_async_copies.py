"""tessera-schedule-async-copies: an N-stage software pipeline of global→shared async copies.

A kernel generator writes its main loop in the canonical, unpipelined form that
``pipeline_match`` describes (copies, one commit group, a wait, a barrier, the compute, a
barrier) and marks it ``tessera.pipeline``. This pass turns it into the classic multistage
pipeline (CUTLASS's sm80 "multistage" main loop)::

    prologue:  for p in 0..N-2: issue the copies of iteration p into stage p; commit
    loop i:    wait until at most N-2 groups are pending      (tile i has landed)
               gpu.barrier                                     (visible to all threads, and
                                                                everyone is done with i-1)
               issue the copies of iteration i+N-1 into stage (i+N-1)%N; commit
               compute on stage i%N
    after:     wait for all groups; gpu.barrier

One barrier per iteration suffices: stage (i+N-1)%N is (i-1)%N, which every thread finished
reading before it passed this iteration's barrier, so the loop's trailing barrier goes. Each
iteration commits exactly one group, so the wait count is a constant. Copies for iterations
past the end (prologue and tail) are still issued, with their slice evaluated at the loop's
lower bound (so every address and global load stays in bounds) and ``src_elements`` 0: they
read nothing and only zero-fill a stage nobody reads again, which keeps the group count
uniform without branches. The commit tokens are carried through the loop, so the IR stays
plain nvgpu that later passes can read.

Staged buffers get N copies in the dynamic shared memory (``pipeline_smem``); the kernel's
``tessera.smem_bytes`` grows accordingly, and the loop's ``tessera.pipeline`` marker becomes
``tessera.pipeline_stages = N``. With ``stages=1`` the loop is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from mlir import ir
from mlir.dialects import arith, gpu, memref, nvgpu, scf

from tessera.diagnostics import source_location
from tessera.errors import PassError
from tessera.ir_walk import walk_ops
from tessera.pass_registry import register_pass

from .pipeline_match import (
    COPY,
    PIPELINE_ATTR,
    PipelineLoop,
    constant_int,
    is_inside,
    match_pipeline_loop,
)
from .pipeline_smem import RANGE_ATTR, SMEM_ATTR, RingLayout, enclosing_function, plan_ring

STAGES_ATTR = "tessera.pipeline_stages"


@dataclass(frozen=True)
class Options:
    """stages: how many tiles are in shared memory at once (1 = no pipelining)."""

    stages: int = 3


class _IndexMath:
    """Index arithmetic that folds constants, with one ``arith.constant`` per value at the
    top of the kernel, so that the rewritten IR stays readable."""

    def __init__(self, function: ir.Operation) -> None:
        entry = function.regions[0].blocks[0]
        self._at_entry = ir.InsertionPoint(next(iter(entry.operations)))
        self._cache: dict[int, ir.Value] = {}

    def const(self, value: int) -> ir.Value:
        if value not in self._cache:
            with self._at_entry:
                self._cache[value] = arith.constant(ir.IndexType.get(), value)  # type: ignore[call-arg]
        return self._cache[value]

    def add(self, a: ir.Value, b: ir.Value) -> ir.Value:
        x, y = constant_int(a), constant_int(b)
        if x is not None and y is not None:
            return self.const(x + y)
        return a if y == 0 else b if x == 0 else arith.addi(a, b)

    def mul(self, a: ir.Value, b: ir.Value) -> ir.Value:
        x, y = constant_int(a), constant_int(b)
        if x is not None and y is not None:
            return self.const(x * y)
        return a if y == 1 else b if x == 1 else arith.muli(a, b)

    def iteration(self, iv: ir.Value, lb: ir.Value, step: ir.Value) -> ir.Value:
        """(iv - lb) / step: the 0-based iteration number."""
        shifted = iv if constant_int(lb) == 0 else arith.subi(iv, lb)
        return shifted if constant_int(step) == 1 else arith.divui(shifted, step)


class _Rewriter:
    """Rewrites one matched loop in place (the module docstring shows the result)."""

    def __init__(self, found: PipelineLoop, stages: int, layout: RingLayout) -> None:
        self.found = found
        self.stages = stages
        self.layout = layout
        self.loop = found.loop
        self.math = _IndexMath(enclosing_function(found.loop))
        self.lb, self.ub, self.step = (self.loop.operands[i] for i in range(3))
        self.old_iv = self.loop.regions[0].blocks[0].arguments[0]

    def stage_views(self, stage: ir.Value) -> dict[ir.Value, ir.Value]:
        """A view of each staged buffer in ``stage`` (an index value)."""
        views = {}
        math = self.math
        shift = math.mul(stage, math.const(self.layout.span))
        for buffer in self.found.staged:
            offset = math.add(math.const(buffer.offset), shift)
            view = memref.view(buffer.value.type, buffer.view.operands[0], offset, [])
            if constant_int(offset) is None:
                last = buffer.offset + (self.stages - 1) * self.layout.span + buffer.size
                view.owner.attributes[RANGE_ATTR] = ir.DenseI64ArrayAttr.get([buffer.offset, last])
            views[buffer.value] = view
        return views

    def issue(self, iteration: ir.Value, stage: ir.Value) -> ir.Value:
        """The copies of ``iteration`` into ``stage``, committed as one group (zero-size
        copies of the lower bound's tile when ``iteration`` is past the end); returns the
        group's token."""
        valid = arith.cmpi(arith.CmpIPredicate.slt, iteration, self.ub)
        mapping = {self.old_iv: arith.select(valid, iteration, self.lb)}
        mapping.update(self.stage_views(stage))
        tokens = []
        for op in self.found.slice_ops:
            if op.name == COPY:
                tokens.append(self._copy(cast(nvgpu.DeviceAsyncCopyOp, op.opview), mapping, valid))
                continue
            clone = op.clone()
            for inner in walk_ops(clone):
                for i, operand in enumerate(inner.operands):
                    if operand in mapping:
                        inner.operands[i] = mapping[operand]
            for old, new in zip(op.results, clone.results, strict=True):
                mapping[old] = new
        return nvgpu.device_async_create_group(tokens)

    def _copy(
        self, copy: nvgpu.DeviceAsyncCopyOp, mapping: dict[ir.Value, ir.Value], valid: ir.Value
    ) -> ir.Value:
        def get(value: ir.Value) -> ir.Value:
            return mapping.get(value, value)

        full = self.math.const(ir.IntegerAttr(copy.dstElements).value)
        requested = get(copy.srcElements) if copy.srcElements is not None else full
        return nvgpu.device_async_copy(
            get(copy.dst),
            [get(v) for v in copy.dstIndices],
            get(copy.src),
            [get(v) for v in copy.srcIndices],
            copy.dstElements,
            src_elements=arith.select(valid, requested, self.math.const(0)),
            bypass_l1=True if "bypassL1" in copy.operation.attributes else None,
        )

    def prologue(self) -> scf.ForOp:
        """Issues the first N-1 tiles and makes the new loop, which carries the last
        commit token; moves the old body into it."""
        loop, math = self.loop, self.math
        with ir.InsertionPoint(loop):
            token = None
            for p in range(self.stages - 1):
                iteration = math.add(self.lb, math.mul(self.step, math.const(p)))
                token = self.issue(iteration, math.const(p))
            assert token is not None
            inits = [loop.operands[i] for i in range(3, len(loop.operands))]
            new_loop = scf.ForOp(self.lb, self.ub, self.step, [*inits, token])  # type: ignore[call-arg]
        old_body, new_body = loop.regions[0].blocks[0], new_loop.body
        for old, new in zip(old_body.arguments, new_body.arguments, strict=False):
            old.replace_all_uses_with(new)
        self.old_iv = new_body.arguments[0]
        for op in list(old_body.operations):
            new_body.append(op.operation)
        for i, result in enumerate(loop.results):
            result.replace_all_uses_with(new_loop.results[i])
        return new_loop

    def run(self) -> None:
        found, stages, math = self.found, self.stages, self.math
        feeders = [op for op in reversed(found.slice_ops) if op.name != COPY]
        new_loop = self.prologue()
        body = new_loop.body
        iv, carried = body.arguments[0], body.arguments[len(body.arguments) - 1]
        ops = list(body.operations)
        with ir.InsertionPoint(ops[0]):
            iteration = math.iteration(iv, self.lb, self.step)
            compute_views = self.stage_views(arith.remui(iteration, math.const(stages)))
        for old_value, view in compute_views.items():
            for use in list(old_value.uses):
                owner = use.owner.operation
                if is_inside(owner, new_loop.operation) and owner not in found.slice_ops:
                    owner.operands[use.operand_number] = view
        with ir.InsertionPoint(found.ready_barrier):
            nvgpu.device_async_wait(carried, num_groups=stages - 2)
        with ir.InsertionPoint.after(found.ready_barrier):
            ahead = math.add(iv, math.mul(self.step, math.const(stages - 1)))
            stage = arith.remui(math.add(iteration, math.const(stages - 1)), math.const(stages))
            next_token = self.issue(ahead, stage)
        yield_op = ops[-1]
        with ir.InsertionPoint(yield_op):
            scf.YieldOp([*yield_op.operands, next_token])
        yield_op.erase()
        for op in (found.wait, found.group, *reversed(found.copies)):
            op.erase()
        if found.trailing_barrier is not None:
            found.trailing_barrier.erase()
        _erase_unused(feeders)
        _erase_unused([buffer.view for buffer in found.staged])
        with ir.InsertionPoint.after(new_loop):
            nvgpu.device_async_wait(new_loop.results[len(new_loop.results) - 1], num_groups=0)
            gpu.barrier()
        for name in [str(n) for n in self.loop.attributes]:
            if name != PIPELINE_ATTR:
                new_loop.attributes[name] = self.loop.attributes[name]
        new_loop.attributes[STAGES_ATTR] = ir.IntegerAttr.get(
            ir.IntegerType.get_signless(64), stages
        )
        self.loop.erase()


def _erase_unused(ops: list[ir.Operation]) -> None:
    """Erases those of ``ops`` (users before producers) whose results nothing uses."""
    for op in ops:
        if all(not list(r.uses) for r in op.results):
            op.erase()


def _move_views(layout: RingLayout, math: _IndexMath) -> None:
    """Moves the views that sat above the staged buffers past the new ring."""
    if not layout.shift:
        return
    for view in layout.moved:
        op = view.op
        with ir.InsertionPoint(op):
            op.operands[1] = math.add(op.operands[1], math.const(layout.shift))
        if RANGE_ATTR in op.attributes:
            op.attributes[RANGE_ATTR] = ir.DenseI64ArrayAttr.get(
                [view.begin + layout.shift, view.end + layout.shift]
            )


@register_pass("tessera-schedule-async-copies", Options)
def schedule_async_copies(module: ir.Operation, options: Options) -> None:
    """Software-pipeline the global→shared async copies of every scf.for marked
    tessera.pipeline over `stages` shared-memory stages (prologue, steady state with
    device_async_wait numGroups=stages-2, zero-size copies past the end); record the
    kernel's dynamic shared memory in tessera.smem_bytes. stages=1 leaves loops unchanged."""
    if options.stages < 1:
        raise PassError(f"tessera-schedule-async-copies: stages must be >= 1, got {options.stages}")
    if options.stages == 1:
        return
    loops = [
        op for op in walk_ops(module) if op.name == "scf.for" and PIPELINE_ATTR in op.attributes
    ]
    for loop in loops:
        found = match_pipeline_loop(loop)
        layout = plan_ring(found, options.stages)
        function = enclosing_function(loop)
        with loop.location:
            _move_views(layout, _IndexMath(function))
            _Rewriter(found, options.stages, layout).run()
        i64 = ir.IntegerType.get_signless(64)
        if layout.total >= 1 << 63:
            raise PassError(
                f"the pipelined loop needs {layout.total} bytes of shared memory",
                source_location(loop.location),
            )
        function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(i64, layout.total)
