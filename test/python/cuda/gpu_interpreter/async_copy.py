"""Rules: async copies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from .access import _addresses, _aligned, _global_read, _not_flying, _words
from .driver import rule
from .memory import Buffer, _SharedRef
from .state import _Copies

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op, _Run


@rule("nvgpu.device_async_copy")
def _async_copy(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """cp.async of ``dstElements``, reading ``srcElements`` (all when absent) and zero-filling
    the rest; it lands when a wait retires its group."""
    view: Any = op.opview
    dst = k.slot(view.dst)
    dst_idx = [k.slot(v) for v in view.dstIndices]
    src = k.slot(view.src)
    src_idx = [k.slot(v) for v in view.srcIndices]
    src_count = k.slot(view.srcElements) if view.srcElements is not None else None
    count = ir.IntegerAttr(op.attributes["dstElements"]).value
    out = k.slot(op.results[0])

    def step(run: _Run) -> None:
        r = run.regs
        target, source = r[dst], r[src]
        if not isinstance(target, _SharedRef) or not isinstance(source, Buffer):
            raise info.fault(run, "copies from a global buffer to shared memory only")
        if not run.waited:
            raise info.fault(run, f"copies from {source.name} before griddepcontrol.wait")
        if target.kind.name != source.kind.name:
            raise info.fault(run, f"copies {source.dtype} into a {target.kind.name} view")
        nbytes = count * target.kind.size
        if nbytes not in (4, 8, 16):
            raise info.fault(run, f"copies {nbytes} bytes (cp.async moves 4, 8 or 16)")
        at = _addresses(run, info, target, [r[i] for i in dst_idx], count)
        _aligned(run, info, at, nbytes, "the copy's destination")
        if nbytes == 16 and run.full:
            run.launch.count_conflicts("cp.async", at % target.space.stride)
        reads = (
            run.lanes(r[src_count]).astype(np.int64)
            if src_count is not None
            else np.full(len(at), count, dtype=np.int64)
        )
        bad = (reads < 0) | (reads > count)
        if bad.any():
            raise info.fault(run, f"{run.where(bad)} reads {run.first(reads, bad)} of {count}")
        e = run.lanes(r[src_idx[0]]).astype(np.int64)
        reading = reads > 0
        bad = reading & ((e < 0) | (e + reads > source.size))
        if bad.any():
            raise info.fault(
                run,
                f"{run.where(bad)} reads elements {run.first(e, bad)}..+{run.first(reads, bad)} "
                f"of {source.name} ({source.size} {source.dtype})",
            )
        _aligned(
            run,
            info,
            np.where(reading, source.offset + e * source.kind.size, 0),
            nbytes,
            "the copy's source",
        )
        column = np.arange(count)
        inside = column < reads[:, None]
        gathered = source.typed()[np.where(inside, e[:, None] + column, 0)]
        payload: np.ndarray = np.where(inside, gathered, 0).astype(source.kind.mem)
        who = np.broadcast_to(run.gtid_sel[:, None], inside.shape)[inside]
        _global_read(run, info, source, (e[:, None] + column)[inside], who)
        words = _words(at, nbytes, True)
        _not_flying(run, info, target.space, words, "copies into")
        target.space.log.add(words, run.warp_sel, True, info, target.space)
        target.space.inflight[words] = True
        target.space.flying += words.size
        threads = np.arange(run.T)[run.sel]
        run.pending.append(
            _Copies(
                target.space,
                threads,
                run.committed[threads],
                at,
                np.ascontiguousarray(payload).view(np.uint8).reshape(len(at), nbytes),
            )
        )
        r[out] = None

    return step


@rule("nvgpu.device_async_create_group")
def _commit(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])

    def step(run: _Run) -> None:
        run.committed[run.sel] += 1
        run.regs[out] = None

    return step


@rule("nvgpu.device_async_wait")
def _wait(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    keep_groups = (
        ir.IntegerAttr(op.attributes["numGroups"]).value if "numGroups" in op.attributes else 0
    )

    def step(run: _Run) -> None:
        still = []
        for copies in run.pending:
            retire = run.active[copies.thread] & (
                copies.group < run.committed[copies.thread] - keep_groups
            )
            if retire.any():
                _land(run, copies.subset(retire), info)
            if not retire.all():
                still.append(copies.subset(~retire))
        run.pending = still

    return step


def _land(run: _Run, copies: _Copies, info: _Op) -> None:
    """The copies' bytes arrive; from now on they count as writes of the issuing warps."""
    space = copies.space
    nbytes = copies.payload.shape[1]
    space.data[copies.dst[:, None] + np.arange(nbytes)] = copies.payload
    words = _words(copies.dst, nbytes, True)
    space.inflight[words] = False
    space.written[words] = True
    space.flying -= words.size
    space.log.add(words, run.warp[copies.thread], True, info, space)
