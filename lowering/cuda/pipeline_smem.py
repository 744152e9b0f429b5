"""Where the stages of a pipelined loop live in dynamic shared memory.

A kernel addresses its dynamic shared memory through ``memref.view``s of
``gpu.dynamic_shared_memory`` at byte offsets, and records how many bytes it needs as the
``tessera.smem_bytes`` attribute of its ``gpu.func``. Pipelining a loop N deep needs N copies
of its staged buffers. They stay where they are for stage 0, and the *ring* grows in place:
if the staged buffers span bytes ``[lo, hi)``, stage ``s`` of a buffer at offset ``o`` lives
at ``o + s * span`` with ``span = hi - lo`` rounded up to 128 bytes (so each stage keeps the
alignment that bank-conflict swizzles assume), and every view that started at or after ``hi``
moves up past the ring. Views below ``hi`` that are not staged stay put: they alias stage 0,
which is only safe outside the loop (an epilogue reusing the pipeline's bytes), so one used
inside the loop is an error.

A view whose offset depends on the stage (one this pass made for an earlier loop) carries
``tessera.smem_range = array<i64: begin, end>``, the bytes it may touch, so that later loops
in the same kernel can plan around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.ir_walk import walk_ops

from .pipeline_match import (
    DYNAMIC_SMEM,
    VIEW,
    PipelineLoop,
    byte_size,
    constant_int,
    defining_op,
    is_inside,
    located,
)

SMEM_ATTR = "tessera.smem_bytes"
RANGE_ATTR = "tessera.smem_range"
STAGE_ALIGN = 128


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class View:
    """A ``memref.view`` of the dynamic shared memory and the bytes ``[begin, end)`` it
    may touch."""

    op: ir.Operation
    begin: int
    end: int


@dataclass(frozen=True)
class RingLayout:
    """The plan for one loop: stage ``s`` of a staged buffer at offset ``o`` is at
    ``o + s * span``; views in ``moved`` shift up by ``shift`` bytes; the kernel then needs
    ``total`` bytes."""

    span: int
    ring: tuple[int, int]
    moved: tuple[View, ...]
    shift: int
    total: int


def enclosing_function(op: ir.Operation) -> ir.Operation:
    current = op.parent
    while current is not None and current.operation.name not in ("gpu.func", "func.func"):
        current = current.operation.parent
    if current is None:
        raise located("a pipelined loop must be inside a gpu.func", op)
    return current.operation


def shared_views(function: ir.Operation) -> list[View]:
    """Every view of the dynamic shared memory in ``function`` with the bytes it touches."""
    views = []
    for op in walk_ops(function):
        if op.name != VIEW:
            continue
        source = defining_op(op.operands[0])
        if source is None or source.name != DYNAMIC_SMEM:
            continue
        if RANGE_ATTR in op.attributes:
            begin, end = (int(x) for x in ir.DenseI64ArrayAttr(op.attributes[RANGE_ATTR]))
            views.append(View(op, begin, end))
            continue
        offset = constant_int(op.operands[1])
        size = byte_size(op.results[0].type)
        if offset is None or size is None:
            raise located(
                "views of the dynamic shared memory need a constant byte offset and a static "
                "shape so that pipelining can lay out its stages around them",
                op,
            )
        views.append(View(op, offset, offset + size))
    return views


def current_smem_bytes(function: ir.Operation, views: list[View]) -> int:
    recorded = function.attributes[SMEM_ATTR] if SMEM_ATTR in function.attributes else None
    declared = ir.IntegerAttr(recorded).value if recorded is not None else 0
    return max([declared] + [v.end for v in views])


def plan_ring(found: PipelineLoop, stages: int) -> RingLayout:
    """Lays out ``stages`` copies of the staged buffers of ``found`` (module docstring)."""
    function = enclosing_function(found.loop)
    views = shared_views(function)
    staged_views = {s.view for s in found.staged}
    lo = min(s.offset for s in found.staged)
    hi = max(s.offset + s.size for s in found.staged)
    span = round_up(hi - lo, STAGE_ALIGN)
    ring = (lo, lo + stages * span)
    moved = tuple(v for v in views if v.op not in staged_views and v.begin >= hi)
    shift = round_up(max(0, ring[1] - hi), STAGE_ALIGN) if moved else 0
    for view in views:
        if view.op in staged_views or view in moved:
            continue
        overlaps = view.begin < ring[1] and view.end > ring[0]
        used_inside = any(is_inside(use.owner, found.loop) for use in view.op.results[0].uses)
        if overlaps and used_inside:
            raise located(
                f"shared memory bytes [{view.begin}, {view.end}) used inside the pipelined "
                f"loop overlap its stage buffers [{ring[0]}, {ring[1]})",
                view.op,
            )
    old_total = current_smem_bytes(function, views)
    total = max(ring[1], old_total + shift if old_total > hi else old_total)
    return RingLayout(span, ring, moved, shift, total)
