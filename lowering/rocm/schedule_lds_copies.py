"""tessera-schedule-lds-copies: global→LDS double buffering through registers, the AMD form of
``tessera-schedule-async-copies`` (AMD has no cp.async).

A kernel generator writes its main loop unpipelined and marks it ``tessera.pipeline``::

    scf.for %i = %lb to %ub step %s iter_args(...) {      {tessera.pipeline}
      ...index arithmetic, global loads (vector.load / memref.load)...
      vector.store %v, %lds[..]                           // into staged LDS views
      gpu.barrier                                         // the "ready" barrier
      ...compute reading the staged views...
      gpu.barrier                                         // the "trailing" barrier
      scf.yield ...
    }

With ``stages=2`` the loop becomes::

    prologue:  load tile 0 and store it into buffer 0; gpu.barrier
    loop i:    load tile i+1 into registers       (in flight while tile i is computed)
               compute on buffer i%2
               store the registers into buffer (i+1)%2
               gpu.barrier

One barrier per iteration suffices: buffer (i+1)%2 was last read in iteration i-1, which
every thread finished before the barrier that ended it; the barrier after the stores makes
tile i+1 visible before iteration i+1 reads it. Past the last tile the loads read the first
tile again (in bounds) and fill a buffer nobody reads, so the loop has no branch.

Every staged view (a ``memref.view`` of ``gpu.dynamic_shared_memory`` at a constant offset
with a static shape, defined above the loop) gets a second copy ``span`` bytes above the
first, ``span`` the staged bytes rounded up to 128; the kernel's ``tessera.smem_bytes`` grows
accordingly. ``stages=1`` leaves the loop as it is. Anything else a loop holds is a located
``PassError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, memref, scf

from tessera.errors import PassError
from tessera.ir_walk import walk_ops
from tessera.lowering.cuda.pipeline_match import (
    DYNAMIC_SMEM,
    PIPELINE_ATTR,
    VIEW,
    byte_size,
    constant_int,
    defining_op,
    is_inside,
    located,
)
from tessera.lowering.cuda.pipeline_smem import (
    SMEM_ATTR,
    STAGE_ALIGN,
    enclosing_function,
    round_up,
    shared_views,
)
from tessera.pass_registry import register_pass

STAGES_ATTR = "tessera.pipeline_stages"
BARRIER = "gpu.barrier"
STORES = ("vector.store", "memref.store")
# Ops the copy part may hold besides its stores: re-evaluating them for the next iteration,
# earlier than the loop did, must not change what they compute (global loads qualify: the
# loop writes no global memory that they read).
_LOAD_DIALECTS = ("arith", "index", "math")
_LOAD_OPS = {
    "gpu.thread_id",
    "gpu.block_id",
    "gpu.block_dim",
    "gpu.grid_dim",
    "gpu.lane_id",
    "memref.load",
    "vector.load",
    "vector.broadcast",
    "vector.splat",
}


@dataclass(frozen=True)
class Options:
    """stages: LDS buffers per staged tile (1 = no pipelining, 2 = double buffering)."""

    stages: int = 2


@dataclass(frozen=True)
class _Staged:
    view: ir.Operation
    offset: int
    size: int


@dataclass(frozen=True)
class _Loop:
    """The parts of one canonical loop."""

    loop: ir.Operation
    copy_part: tuple[ir.Operation, ...]  # every op before the ready barrier, in order
    loads: tuple[ir.Operation, ...]  # the copy part without its stores
    stores: tuple[ir.Operation, ...]
    compute: tuple[ir.Operation, ...]  # between the ready and the trailing barrier
    staged: tuple[_Staged, ...]


def _is_workgroup(type_: ir.Type) -> bool:
    if not isinstance(type_, ir.MemRefType) or type_.memory_space is None:
        return False
    return "workgroup" in str(type_.memory_space) or str(type_.memory_space) == "3 : i64"


def _staged(value: ir.Value, loop: ir.Operation, store: ir.Operation) -> _Staged:
    view = defining_op(value)
    if view is None or view.name != VIEW:
        raise located(
            "a store into LDS in a pipelined loop must write a memref.view of "
            "gpu.dynamic_shared_memory",
            store,
        )
    source = defining_op(view.operands[0])
    if source is None or source.name != DYNAMIC_SMEM:
        raise located("a staged buffer must be a view of gpu.dynamic_shared_memory", view)
    if is_inside(view, loop):
        raise located("a staged buffer must be defined above the pipelined loop", view)
    offset = constant_int(view.operands[1])
    size = byte_size(value.type)
    if offset is None or size is None:
        raise located("a staged buffer needs a constant byte offset and a static shape", view)
    for use in view.results[0].uses:
        if not is_inside(use.owner, loop):
            raise located(
                "a staged buffer is used after the pipelined loop, where either of its two "
                "buffers may hold the last tile",
                use.owner.operation,
            )
    return _Staged(view, offset, size)


def match(loop: ir.Operation) -> _Loop:
    """The parts of the marked ``scf.for``; raises ``PassError`` where the loop breaks the
    contract (module docstring)."""
    body = loop.regions[0].blocks[0]
    ops = [op.operation for op in body.operations]
    ready_at = next((i for i, op in enumerate(ops) if op.name == BARRIER), None)
    if ready_at is None:
        raise located("a pipelined loop needs a gpu.barrier after its stores into LDS", loop)
    copy_part = ops[:ready_at]
    stores = [op for op in copy_part if op.name in STORES and _is_workgroup(op.operands[1].type)]
    if not stores:
        raise located(
            "a loop marked tessera.pipeline stores nothing into LDS before its barrier", loop
        )
    induction = body.arguments[0]
    loads = [op for op in copy_part if op not in stores]
    for op in loads:
        dialect = op.name.split(".", 1)[0]
        if (dialect not in _LOAD_DIALECTS and op.name not in _LOAD_OPS) or op.regions:
            raise located(
                f"'{op.name}' comes before the first barrier of a pipelined loop, but only "
                "index arithmetic, thread ids, global loads and the stores into LDS may",
                op,
            )
        if op.name in ("memref.load", "vector.load") and _is_workgroup(op.operands[0].type):
            raise located(
                "a load from LDS before the barrier of a pipelined loop would read a buffer "
                "the pipeline overwrites",
                op,
            )
    produced = {result for op in copy_part for result in op.results}
    for op in copy_part:
        for value in op.operands:
            if isinstance(value, ir.BlockArgument) and value.owner == body and value != induction:
                raise located(
                    "the copies of a pipelined loop may depend only on the induction variable "
                    "and values defined above the loop, not on loop-carried values",
                    op,
                )
    trailing_at = len(ops) - 2 if len(ops) >= 2 and ops[-2].name == BARRIER else len(ops) - 1
    if trailing_at <= ready_at:
        trailing_at = len(ops) - 1
    compute = ops[ready_at + 1 : trailing_at]
    for op in compute:
        for inner in walk_ops(op):
            for value in inner.operands:
                if value in produced:
                    raise located(
                        "the compute of a pipelined loop uses a value its copy part computes; "
                        "compute it above the loop or again after the barrier",
                        inner,
                    )
    staged: dict[ir.Value, _Staged] = {}
    for store in stores:
        destination = store.operands[1]
        if destination not in staged:
            staged[destination] = _staged(destination, loop, store)
    return _Loop(
        loop,
        tuple(copy_part),
        tuple(loads),
        tuple(stores),
        tuple(compute),
        tuple(sorted(staged.values(), key=lambda s: s.offset)),
    )


class _Rewriter:
    def __init__(self, found: _Loop, span: int) -> None:
        self.found = found
        self.span = span
        self.loop = found.loop
        function = enclosing_function(found.loop)
        entry = function.regions[0].blocks[0]
        self._top = ir.InsertionPoint(next(iter(entry.operations)))
        self._constants: dict[int, ir.Value] = {}
        self.lb, self.ub, self.step = (self.loop.operands[i] for i in range(3))
        self.old_iv = self.loop.regions[0].blocks[0].arguments[0]

    def const(self, value: int) -> ir.Value:
        if value not in self._constants:
            with self._top:
                self._constants[value] = arith.constant(ir.IndexType.get(), value)  # type: ignore[call-arg]
        return self._constants[value]

    def views(self, stage: ir.Value) -> dict[ir.Value, ir.Value]:
        """Each staged view's copy in buffer ``stage`` (an index, 0 or 1)."""
        shift = arith.muli(stage, self.const(self.span))
        out = {}
        for buffer in self.found.staged:
            view = buffer.view
            offset = arith.addi(self.const(buffer.offset), shift)
            out[view.results[0]] = memref.view(view.results[0].type, view.operands[0], offset, [])
        return out

    @staticmethod
    def clone(ops: tuple[ir.Operation, ...], mapping: dict[ir.Value, ir.Value]) -> None:
        """Clones ``ops`` at the current insertion point, reading ``mapping``'s values."""
        for op in ops:
            clone = op.clone()
            for inner in walk_ops(clone):
                for i, operand in enumerate(inner.operands):
                    if operand in mapping:
                        inner.operands[i] = mapping[operand]
            for old, new in zip(op.results, clone.results, strict=True):
                mapping[old] = new

    def run(self) -> None:
        found, loop = self.found, self.loop
        with ir.InsertionPoint(loop):
            self.clone(found.copy_part, {self.old_iv: self.lb})
            gpu.barrier()
            inits = [loop.operands[i] for i in range(3, len(loop.operands))]
            new_loop = scf.ForOp(self.lb, self.ub, self.step, inits)  # type: ignore[call-arg]
        old_body, body = loop.regions[0].blocks[0], new_loop.body
        iv = body.arguments[0]
        with ir.InsertionPoint(body):
            following = arith.addi(iv, self.step)
            has_next = arith.cmpi(arith.CmpIPredicate.slt, following, self.ub)
            mapping: dict[ir.Value, ir.Value] = {
                self.old_iv: arith.select(has_next, following, self.lb)
            }
            self.clone(found.loads, mapping)
            shifted = iv if constant_int(self.lb) == 0 else arith.subi(iv, self.lb)
            iteration = shifted if constant_int(self.step) == 1 else arith.divui(shifted, self.step)
            stage = arith.remui(iteration, self.const(2))
            current = self.views(stage)
            mapping.update(self.views(arith.subi(self.const(1), stage)))
        for old, new in zip(old_body.arguments, body.arguments, strict=True):
            old.replace_all_uses_with(new)
        for op in found.compute:
            body.append(op)
            for inner in walk_ops(op):
                for i, operand in enumerate(inner.operands):
                    if operand in current:
                        inner.operands[i] = current[operand]
        old_yield = old_body.operations[len(old_body.operations) - 1]
        with ir.InsertionPoint(body):
            self.clone(found.stores, mapping)
            gpu.barrier()
            scf.YieldOp(list(old_yield.operands))
        for name in [str(n) for n in loop.attributes]:
            if name != PIPELINE_ATTR:
                new_loop.attributes[name] = loop.attributes[name]
        new_loop.attributes[STAGES_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 2)
        for old, new in zip(loop.results, new_loop.results, strict=True):
            old.replace_all_uses_with(new)
        loop.erase()


def _ring_check(function: ir.Operation, found: _Loop, span: int) -> int:
    """The kernel's shared-memory bytes with the second buffers; refuses a view in their way."""
    staged = {s.view for s in found.staged}
    lo = min(s.offset for s in found.staged)
    ring_end = lo + 2 * span
    hi = max(s.offset + s.size for s in found.staged)
    for view in shared_views(function):
        if view.op in staged:
            continue
        if view.begin < ring_end and view.end > lo:
            raise located(
                f"shared memory bytes [{view.begin}, {view.end}) overlap the double buffers "
                f"[{lo}, {ring_end}) of a pipelined loop (staged tiles end at {hi}); place "
                "other views below the staged tiles or past the second buffer",
                view.op,
            )
    recorded = (
        ir.IntegerAttr(function.attributes[SMEM_ATTR]).value
        if SMEM_ATTR in function.attributes
        else 0
    )
    return max(recorded, ring_end, *(v.end for v in shared_views(function)))


@register_pass("tessera-schedule-lds-copies", Options)
def schedule_lds_copies(module: ir.Operation, options: Options) -> None:
    """Double-buffer the global→LDS copies of every scf.for marked tessera.pipeline (AMD: the
    next tile is loaded into registers while the current one is computed, then stored into the
    other LDS buffer; one barrier per iteration); record the kernel's dynamic shared memory in
    tessera.smem_bytes. stages=1 leaves loops unchanged."""
    if options.stages not in (1, 2):
        raise PassError(
            f"tessera-schedule-lds-copies: stages must be 1 or 2 (one tile prefetched into "
            f"registers), got {options.stages}"
        )
    if options.stages == 1:
        return
    loops = [
        op for op in walk_ops(module) if op.name == "scf.for" and PIPELINE_ATTR in op.attributes
    ]
    for loop in loops:
        found = match(loop)
        function = enclosing_function(loop)
        lo = min(s.offset for s in found.staged)
        hi = max(s.offset + s.size for s in found.staged)
        span = round_up(hi - lo, STAGE_ALIGN)
        total = _ring_check(function, found, span)
        with loop.location:
            _Rewriter(found, span).run()
        function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), total)
