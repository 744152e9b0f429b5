"""Memory access: addressing, alignment, loads and stores, and the race checks at barriers
and at the end of a launch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .kinds import WORDS, KernelFault, from_memory, to_memory
from .memory import Buffer, _ConstRef, _dense_race, _race, _SharedRef

if TYPE_CHECKING:
    from .memory import Storage, _Space
    from .state import _Op, _Run


def _addresses(
    run: _Run, op: _Op, ref: Any, idx: Sequence[np.ndarray], width: int, loads: bool = False
) -> np.ndarray:
    """Per active thread: the element index (global) or absolute byte (shared) of ``width``
    consecutive elements at ``ref[idx]``, bounds checked. ``loads``: a load, which may read a
    buffer the launch marks early (a weight) before the kernel's wait."""
    if isinstance(ref, Buffer | _ConstRef):
        early = loads and id(ref) in run.launch.early
        if isinstance(ref, Buffer) and not run.waited and not early:
            raise op.fault(
                run,
                f"touches {ref.name} before the kernel's griddepcontrol.wait (the kernels "
                "before it may still be running)",
            )
        e = run.lanes(idx[0]).astype(np.int64, copy=False)
        size = ref.size if isinstance(ref, Buffer) else len(ref.data)
        bad = (e < 0) | (e > size - width)
        if bad.any():
            raise op.fault(
                run,
                f"{run.where(bad)} accesses elements {run.first(e, bad)}..+{width} of {ref.name} "
                f"({size} {ref.kind.name})",
            )
        return e
    if not isinstance(ref, _SharedRef):
        raise op.fault(run, f"expected a memref, found {type(ref).__name__}")
    space = ref.space
    outside: Any = False
    linear: Any = 0
    last = len(ref.shape) - 1
    for axis, (i, dim, stride) in enumerate(zip(idx, ref.shape, ref.strides, strict=True)):
        outside = outside | (i < 0) | (i > dim - (width if axis == last else 1))
        linear = linear + (i * stride if stride != 1 else i)
    byte = ref.base + linear * ref.kind.size
    outside = outside | (byte < 0) | (byte > space.size - width * ref.kind.size)
    if outside.any() if run.full else run.lanes(outside).any():
        flagged = run.lanes(outside)
        at = [int(run.lanes(i)[np.flatnonzero(flagged)[0]]) for i in idx]
        raise op.fault(
            run,
            f"{run.where(flagged)} accesses {at} (+{width}) of a {list(ref.shape)}x"
            f"{ref.kind.name} view at byte {run.first(run.lanes(ref.base), flagged)} of "
            f"{space.name} ({space.size} bytes)",
        )
    byte = run.lanes(byte)
    return byte + run.block_sel * space.stride if run.blocks > 1 else byte


def _aligned(run: _Run, op: _Op, byte: np.ndarray, align: int, what: str) -> None:
    if align > 1:
        bad = byte % align != 0
        if bad.any():
            raise op.fault(
                run,
                f"{run.where(bad)}: {what} at byte {run.first(byte, bad)} is not {align}-aligned",
            )


def _words(byte: np.ndarray, nbytes: int, even: bool = False) -> np.ndarray:
    """The 2-byte words covering ``nbytes`` at each byte: (threads, words). ``even``: every
    byte is known to be even (an access of 2-byte or wider elements)."""
    first = byte >> 1
    if even:
        return first[:, None] + WORDS[nbytes >> 1]
    count = ((byte + nbytes - 1) >> 1) - first + 1
    return first[:, None] + np.arange(int(count.max(initial=1)))


def _initialized(run: _Run, op: _Op, space: _Space, words: np.ndarray) -> None:
    fresh = ~space.written[words]
    if fresh.any():
        raise op.fault(
            run,
            f"{run.where(fresh)} reads shared byte {2 * run.first(words, fresh) % space.stride} "
            f"of {space.name} that nothing has written",
        )


def _not_flying(run: _Run, op: _Op, space: _Space, words: np.ndarray, what: str) -> None:
    if space.flying:
        flying = space.inflight[words]
        if flying.any():
            raise op.fault(
                run,
                f"{run.where(flying)} {what} shared byte "
                f"{2 * run.first(words, flying) % space.stride} of {space.name} while an async "
                "copy into it is in flight (no nvgpu.device_async_wait has retired it)",
            )


def _global_read(
    run: _Run, op: _Op, ref: Buffer, elements: np.ndarray, who: np.ndarray | None = None
) -> None:
    """Logs a read of ``elements`` (per active thread, or flat with ``who``) and checks that
    each was written, when the storage tracks that."""
    storage = ref.storage
    if ref.written is not None:
        fresh = ~ref.written[elements]
        if fresh.any():
            first = int(elements[fresh].reshape(-1)[0])
            raise op.fault(
                run,
                f"reads element {first} of {ref.name}, which nothing has stored yet "
                "(uninitialized memory)",
            )
    if storage.log is not None:
        units = ref.offset + elements * ref.kind.size
        storage.log.add(units, run.gtid_sel if who is None else who, False, op, ref)


def load(run: _Run, op: _Op, ref: Any, idx: Sequence[np.ndarray], width: int, align: int) -> Any:
    """``width`` elements at ``ref[idx]`` per thread, shape (threads, width); zeros for the
    inactive threads."""
    at = _addresses(run, op, ref, idx, width, loads=True)
    span = np.arange(width)
    if isinstance(ref, Buffer):
        _aligned(run, op, ref.offset + at * ref.kind.size, align, "the load")
        elements = at[:, None] + span
        _global_read(run, op, ref, elements)
        values = from_memory(ref.kind, ref.typed()[elements])
    elif isinstance(ref, _ConstRef):
        values = ref.data[at[:, None] + span]
    else:
        _aligned(run, op, at, align, "the load")
        nbytes = width * ref.kind.size
        words = _words(at, nbytes, ref.kind.size > 1)
        _not_flying(run, op, ref.space, words, "reads")
        _initialized(run, op, ref.space, words)
        ref.space.log.add(words, run.warp_sel, False, op, ref.space)
        raw = ref.space.data[at[:, None] + np.arange(nbytes)]
        values = from_memory(ref.kind, raw.view(ref.kind.mem))
    return run.spread(values)


def store(
    run: _Run, op: _Op, ref: Any, idx: Sequence[np.ndarray], value: np.ndarray, align: int
) -> None:
    width = int(np.prod(value.shape[1:], dtype=np.int64)) if value.ndim > 1 else 1
    at = _addresses(run, op, ref, idx, width)
    values = run.lanes(value).reshape(-1, width)
    if isinstance(ref, Buffer):
        _aligned(run, op, ref.offset + at * ref.kind.size, align, "the store")
        elements = at[:, None] + np.arange(width)
        log = ref.storage.log
        if log is None:
            raise op.fault(run, f"stores to {ref.name}, which the kernel was not expected to write")
        units = ref.offset + elements * ref.kind.size
        log.add(units, run.gtid_sel, True, op, ref)
        if ref.written is not None:
            ref.written[elements] = True
        ref.typed()[elements] = to_memory(ref.kind, values)
        return
    if isinstance(ref, _ConstRef):
        raise op.fault(run, f"stores to the constant {ref.name}")
    _aligned(run, op, at, align, "the store")
    nbytes = width * ref.kind.size
    words = _words(at, nbytes, ref.kind.size > 1)
    _not_flying(run, op, ref.space, words, "writes")
    ref.space.written[words] = True
    ref.space.log.add(words, run.warp_sel, True, op, ref.space)
    raw = np.ascontiguousarray(to_memory(ref.kind, values)).view(np.uint8)
    ref.space.data[at[:, None] + np.arange(nbytes)] = raw.reshape(len(at), nbytes)


def check_shared(run: _Run, space: _Space, blocks: np.ndarray | None = None) -> None:
    """Ends the barrier phase of ``blocks`` (all by default) in ``space``: raises on a race."""
    if blocks is None:
        entries = space.log.take()
    else:
        words = space.stride // 2
        entries = space.log.take(lambda units: np.isin(units // words, blocks))
    if entries is None:
        return
    found = _dense_race(entries, len(space.inflight))
    if found is None:
        return
    _, unit, (a, b) = found
    _, who, write, note, notes = entries

    def access(i: int) -> str:
        op = notes[int(note[i])][0]
        verb = "writes" if write[i] else "reads"
        return f"{run.warp_name(int(who[i]))} {verb} it ({op.name} at {op.location})"

    raise KernelFault(
        f"{run.kernel.name}: a race on byte {2 * unit % space.stride} of {space.name}: "
        f"{access(a)} and {access(b)} with no gpu.barrier between"
    )


def check_global(run: _Run, storage: Storage) -> None:
    """Ends a launch's accesses of ``storage``: raises on a race or an element stored twice."""
    log = storage.log
    if log is None:
        return
    entries = log.take()
    if entries is None:
        return
    found = _race(entries, once=True)
    if found is None:
        return
    kind, unit, (a, b) = found
    _, who, write, note, notes = entries

    def access(i: int) -> str:
        op = notes[int(note[i])][0]
        verb = "stores" if write[i] else "reads"
        return f"{run.thread(int(who[i]))} {verb} it ({op.name} at {op.location})"

    ref = notes[int(note[a])][1]
    element = (unit - ref.offset) // ref.kind.size
    what = "is stored twice" if kind == "twice" else "races"
    raise KernelFault(
        f"{run.kernel.name}: element {element} of {ref.name} {what} in one launch: "
        f"{access(a)} and {access(b)}"
    )
