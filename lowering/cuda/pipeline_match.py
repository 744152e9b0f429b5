"""The canonical main loop that ``tessera-schedule-async-copies`` pipelines, and its checks.

A kernel generator writes its main loop unpipelined and marks it with the unit attribute
``tessera.pipeline``::

    scf.for %i = %lb to %ub step %s iter_args(...) {      {tessera.pipeline}
      ...index arithmetic...
      %t0 = nvgpu.device_async_copy %g[..], %a[..], 8 ... // into staged shared buffers
      %t1 = nvgpu.device_async_copy ...
      %grp = nvgpu.device_async_create_group %t0, %t1
      nvgpu.device_async_wait %grp
      gpu.barrier                                         // the "ready" barrier
      ...compute reading the staged buffers...
      gpu.barrier                                         // the "trailing" barrier
      scf.yield ...
    }

``match_pipeline_loop`` finds those parts and checks what the rewrite relies on: every copy
is a top-level op of the body and all of them form the one commit group; the values the copies
need (their *slice*) come from the induction variable, values defined above the loop and ops
that can be evaluated again for another iteration (index arithmetic, thread ids, global
loads), never from the loop-carried values; and every copy writes a *staged buffer*: a
``memref.view`` of ``gpu.dynamic_shared_memory`` at a constant byte offset with a static
shape, defined above the loop. Anything else is a ``PassError`` at the offending op.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import PassError
from tessera.ir_walk import walk_ops

PIPELINE_ATTR = "tessera.pipeline"

COPY = "nvgpu.device_async_copy"
GROUP = "nvgpu.device_async_create_group"
WAIT = "nvgpu.device_async_wait"
BARRIER = "gpu.barrier"
VIEW = "memref.view"
DYNAMIC_SMEM = "gpu.dynamic_shared_memory"

# Ops a copy's slice may hold: evaluating them for another iteration, earlier than the loop
# did, must not change what they compute. Global loads qualify as long as the loop does not
# write what they read (a block table, say); loads of shared memory do not.
_SLICE_DIALECTS = ("arith", "index", "math")
_SLICE_OPS = {
    "affine.apply",
    "affine.min",
    "affine.max",
    "gpu.thread_id",
    "gpu.block_id",
    "gpu.block_dim",
    "gpu.grid_dim",
    "gpu.lane_id",
    "gpu.subgroup_id",
    "memref.dim",
    "memref.load",
    "vector.load",
}


def located(message: str, op: ir.Operation) -> PassError:
    """A ``PassError`` at ``op``'s source location."""
    return PassError(message, source_location(op.location))


@dataclass(frozen=True)
class StagedBuffer:
    """A shared-memory buffer the copies fill: ``view`` of the dynamic shared memory at
    ``offset`` bytes, ``size`` bytes long."""

    value: ir.Value
    view: ir.Operation
    offset: int
    size: int


@dataclass(frozen=True)
class PipelineLoop:
    """The parts of one canonical loop (see the module docstring)."""

    loop: ir.Operation
    copies: tuple[ir.Operation, ...]
    group: ir.Operation
    wait: ir.Operation
    ready_barrier: ir.Operation
    trailing_barrier: ir.Operation | None
    slice_ops: tuple[ir.Operation, ...]
    staged: tuple[StagedBuffer, ...]


def constant_int(value: ir.Value) -> int | None:
    """The integer behind ``value`` when an ``arith.constant`` defines it."""
    owner = value.owner
    if not isinstance(owner, ir.OpView) and not isinstance(owner, ir.Operation):
        return None
    op = owner.operation
    if op.name != "arith.constant":
        return None
    attr = op.attributes["value"]
    return ir.IntegerAttr(attr).value if isinstance(attr, ir.IntegerAttr) else None


def defining_op(value: ir.Value) -> ir.Operation | None:
    owner = value.owner
    if isinstance(owner, (ir.OpView, ir.Operation)):
        return owner.operation
    return None


def is_inside(op: ir.Operation | ir.OpView, ancestor: ir.Operation | ir.OpView) -> bool:
    """Whether ``op`` is ``ancestor`` or nested in one of its regions."""
    current: ir.Operation | None = op.operation
    target = ancestor.operation
    while current is not None:
        if current == target:
            return True
        parent = current.parent
        current = parent.operation if parent is not None else None
    return False


def byte_size(type_: ir.Type) -> int | None:
    """Bytes of a statically shaped memref, else None."""
    if not isinstance(type_, ir.MemRefType) or not type_.has_static_shape:
        return None
    count = 1
    for dim in type_.shape:
        count *= dim
    width = type_.element_type.width if hasattr(type_.element_type, "width") else None
    if width is None:
        return None
    return count * width // 8


def staged_buffer(value: ir.Value, loop: ir.Operation, copy: ir.Operation) -> StagedBuffer:
    """Checks that ``value`` (a copy's destination) is a view the pass can multi-buffer."""
    view = defining_op(value)
    if view is None or view.name != VIEW:
        raise located(
            "an async copy in a pipelined loop must write a memref.view of "
            "gpu.dynamic_shared_memory (found a buffer defined by "
            f"{'a block argument' if view is None else view.name})",
            copy,
        )
    source = defining_op(view.operands[0])
    if source is None or source.name != DYNAMIC_SMEM:
        raise located("a staged buffer must be a view of gpu.dynamic_shared_memory", view)
    if is_inside(view, loop):
        raise located("a staged buffer must be defined above the pipelined loop", view)
    offset = constant_int(view.operands[1])
    size = byte_size(value.type)
    if offset is None or size is None:
        raise located(
            "a staged buffer needs a constant byte offset and a static shape "
            f"(found {value.type} at a non-constant offset)"
            if offset is None
            else f"a staged buffer needs a static shape (found {value.type})",
            view,
        )
    return StagedBuffer(value, view, offset, size)


def _nested_operands(op: ir.Operation) -> list[ir.Value]:
    """Operands of ``op`` and of every op nested in it."""
    return [v for inner in walk_ops(op) for v in inner.operands]


def _slice(
    copies: list[ir.Operation], body: ir.Block, loop: ir.Operation, positions: dict
) -> list[ir.Operation]:
    """The top-level body ops the copies depend on (copies included), in body order."""
    induction = body.arguments[0]
    chosen: dict[int, ir.Operation] = {}
    work = list(copies)
    while work:
        op = work.pop()
        index = positions[op]
        if index in chosen:
            continue
        chosen[index] = op
        for value in _nested_operands(op):
            if isinstance(value, ir.BlockArgument) and value.owner == body and value != induction:
                raise located(
                    "an async copy of a pipelined loop depends on a loop-carried value; "
                    "copies may depend only on the induction variable and values defined "
                    "above the loop",
                    op,
                )
            producer = defining_op(value)
            if producer is not None and producer in positions:
                work.append(producer)
    ops = [chosen[i] for i in sorted(chosen)]
    for op in ops:
        if op.name == COPY:
            continue
        dialect = op.name.split(".", 1)[0]
        if (dialect not in _SLICE_DIALECTS and op.name not in _SLICE_OPS) or op.regions:
            raise located(
                f"'{op.name}' computes an operand of an async copy, but the pipeliner can "
                "only evaluate index arithmetic, thread ids and global loads ahead of time",
                op,
            )
        if op.name in ("memref.load", "vector.load") and _is_shared(op.operands[0].type):
            raise located(
                "an async copy's operand is loaded from shared memory, which the pipelined "
                "loop may overwrite before the copy runs",
                op,
            )
    return ops


def _is_shared(type_: ir.Type) -> bool:
    if not isinstance(type_, ir.MemRefType) or type_.memory_space is None:
        return False
    return "workgroup" in str(type_.memory_space) or str(type_.memory_space) == "3 : i64"


def match_pipeline_loop(loop: ir.Operation) -> PipelineLoop:
    """The parts of the marked ``scf.for`` ``loop``; raises ``PassError`` where the loop
    breaks the contract (the module docstring)."""
    body = loop.regions[0].blocks[0]
    ops = [op.operation for op in body.operations]
    positions = {op: i for i, op in enumerate(ops)}
    for op in ops:
        for inner in walk_ops(op)[:-1]:
            if inner.name in (COPY, GROUP, WAIT):
                raise located(
                    f"'{inner.name}' inside a nested region of a pipelined loop; the "
                    "pipeliner needs the copies, their group and the wait at the loop's top level",
                    inner,
                )
    copies = [op for op in ops if op.name == COPY]
    groups = [op for op in ops if op.name == GROUP]
    waits = [op for op in ops if op.name == WAIT]
    if not copies:
        raise located("a loop marked tessera.pipeline issues no nvgpu.device_async_copy", loop)
    if len(groups) != 1 or len(waits) != 1:
        raise located(
            "a pipelined loop needs exactly one nvgpu.device_async_create_group and one "
            f"nvgpu.device_async_wait (found {len(groups)} and {len(waits)})",
            loop,
        )
    group, wait = groups[0], waits[0]
    tokens = list(group.operands)
    if len(tokens) != len(copies) or {defining_op(t) for t in tokens} != set(copies):
        raise located(
            "the commit group of a pipelined loop must hold every copy of the loop", group
        )
    if positions[group] < max(positions[c] for c in copies):
        raise located("every copy must come before the commit group", group)
    if defining_op(wait.operands[0]) != group or positions[wait] < positions[group]:
        raise located("the wait must follow the commit group and wait on its token", wait)
    for copy in copies:
        if len(list(copy.results[0].uses)) != 1:
            raise located("an async copy's token may only be used by the commit group", copy)
    later = ops[positions[wait] + 1 :]
    ready = next((op for op in later if op.name == BARRIER), None)
    if ready is None:
        raise located("a pipelined loop needs a gpu.barrier after its wait", wait)
    trailing = ops[-2] if len(ops) >= 2 and ops[-2].name == BARRIER else None
    if trailing == ready:
        trailing = None
    staged: dict[ir.Value, StagedBuffer] = {}
    for copy in copies:
        destination = copy.operands[0]
        if destination not in staged:
            staged[destination] = staged_buffer(destination, loop, copy)
    return PipelineLoop(
        loop=loop,
        copies=tuple(copies),
        group=group,
        wait=wait,
        ready_barrier=ready,
        trailing_barrier=trailing,
        slice_ops=tuple(_slice(copies, body, loop, positions)),
        staged=tuple(sorted(staged.values(), key=lambda s: s.offset)),
    )
