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
an output) may be read before some launch stored it. Launches are checked against the kernel's
``known_block_size``, the grid limits and the chip's shared-memory limit. Faults raise
``KernelFault`` naming the kernel, the op and its location, the block and thread or warp, and
the address. ``launch(stats=...)`` also counts shared-memory bank conflicts of ldmatrix and
16-byte cp.async.

Arithmetic is float32 per op (bf16/f16 values are held as float32 and rounded to nearest even
after each op, as the GPU does); transcendentals (math dialect, libdevice calls, ``ex2.approx``)
are computed in float64 and rounded once; ``mma.sync`` accumulates in float64 and rounds once.

Ops are compiled once per kernel into closures over register slots (``Kernel``); ``launch``
runs them. ``run_kernel`` runs a generator's ``KernelInfo`` with parameters bound by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from mlir import ir

WARP = 32
WORDS = [np.arange(n) for n in range(64)]
# A batch of blocks runs in lock step; bigger grids run batch after batch.
MAX_BATCH_THREADS = 8192
MAX_BATCH_SMEM = 8 << 20
# The most dynamic shared memory a block may opt into, by the target chip (CUDA C Programming
# Guide, "Technical Specifications per Compute Capability").
MAX_SMEM = {"sm_80": 166912, "sm_86": 101376, "sm_89": 101376, "sm_90": 232448, "sm_90a": 232448}

Step = Callable[["_Run"], None]


class KernelFault(AssertionError):
    """The kernel did something wrong on a GPU: an access out of bounds or misaligned, a data
    race (a missing barrier or wait), a barrier or warp-collective op under divergence, an
    element stored twice."""


# ---------------------------------------------------------------------------------------------
# Element types: how a value is held in registers (numpy arrays) and in memory


@dataclass(frozen=True)
class Kind:
    """An element type: its MLIR spelling, numpy type in registers and in memory, byte size."""

    name: str
    reg: type
    mem: type
    size: int


KINDS = {
    "bf16": Kind("bf16", np.float32, np.uint16, 2),
    "f16": Kind("f16", np.float32, np.float16, 2),
    "f32": Kind("f32", np.float32, np.float32, 4),
    "f64": Kind("f64", np.float64, np.float64, 8),
    "i1": Kind("i1", np.bool_, np.int8, 1),
    "i8": Kind("i8", np.int8, np.int8, 1),
    "i16": Kind("i16", np.int16, np.int16, 2),
    "i32": Kind("i32", np.int32, np.int32, 4),
    "i64": Kind("i64", np.int64, np.int64, 8),
    "index": Kind("index", np.int64, np.int64, 8),
}
FLOATS = ("bf16", "f16", "f32", "f64")
UNSIGNED: dict[type, type] = {
    np.int8: np.uint8,
    np.int16: np.uint16,
    np.int32: np.uint32,
    np.int64: np.uint64,
}
BITS: dict[int, type] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits, rounded to nearest even (a NaN stays a quiet NaN)."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def round_to(kind: Kind, values: Any) -> np.ndarray:
    """``values`` rounded to ``kind`` (nearest even) and held in its register type."""
    if kind.name == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(values))
    if kind.name == "f16":
        return np.asarray(values, dtype=np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(values).astype(kind.reg, copy=False)


def to_memory(kind: Kind, values: Any) -> np.ndarray:
    if kind.name == "bf16":
        return f32_to_bf16_bits(values)
    return np.asarray(values).astype(kind.mem)


def from_memory(kind: Kind, stored: np.ndarray) -> np.ndarray:
    if kind.name == "bf16":
        return bf16_bits_to_f32(stored)
    if kind.name == "i1":
        return stored != 0
    return stored.astype(kind.reg)


def to_bits(kind: Kind, values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(to_memory(kind, values)).view(BITS[kind.size])


def from_bits(kind: Kind, bits: np.ndarray) -> np.ndarray:
    return from_memory(kind, np.ascontiguousarray(bits).view(kind.mem))


def element_name(type_: ir.Type) -> str:
    if isinstance(type_, ir.ShapedType):
        type_ = type_.element_type
    if isinstance(type_, ir.IndexType):
        return "index"
    if isinstance(type_, ir.IntegerType):
        return f"i{type_.width}"
    return str(type_)


def kind_of(type_: ir.Type) -> Kind:
    name = element_name(type_)
    if name not in KINDS:
        raise NotImplementedError(f"the interpreter has no element type {name}")
    return KINDS[name]


def shape_of(type_: ir.Type) -> tuple[int, ...]:
    return tuple(ir.VectorType(type_).shape) if isinstance(type_, ir.VectorType) else ()


# ---------------------------------------------------------------------------------------------
# Memory


class _Log:
    """The memory accesses of one barrier phase (shared memory, by warp) or one launch (global
    memory, by thread), chunk by chunk (one op's access): the units touched (2-byte words of
    shared memory, element starts in global memory), who touched each, whether it was a write,
    and a note (the op and the memory) for messages.

    Within a phase (launch), two accesses to one unit by different warps (threads), one of them
    a write, race whatever their order; ``_race`` finds them all in one pass."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, np.ndarray, Any, Any]] = []
        self.notes: list[tuple[_Op, Any]] = []

    def add(self, units: np.ndarray, who: np.ndarray, write: bool, op: _Op, ref: Any) -> None:
        """``units`` (threads, k) or (threads,) touched by ``who`` (threads,)."""
        if not units.size:
            return
        flat = units.reshape(-1)
        if len(who) != len(flat):
            who = np.repeat(who, len(flat) // len(who))
        self.notes.append((op, ref))
        self.chunks.append((flat, who, write, len(self.notes) - 1))

    def take(
        self, keep: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[_Op, Any]]] | None:
        """Removes the entries (those whose units ``keep`` selects, when given) and returns
        them as (units, who, write, note) arrays and the notes they index."""
        notes = self.notes
        if not self.chunks:
            self.notes = []
            return None
        units = np.concatenate([c[0] for c in self.chunks])
        who = np.concatenate([c[1] for c in self.chunks])
        if all(np.isscalar(c[2]) for c in self.chunks):
            lengths = [len(c[0]) for c in self.chunks]
            write = np.repeat(np.array([c[2] for c in self.chunks], dtype=bool), lengths)
            note = np.repeat(np.array([c[3] for c in self.chunks]), lengths)
        else:
            write = np.concatenate([np.broadcast_to(c[2], c[0].shape) for c in self.chunks])
            note = np.concatenate([np.broadcast_to(c[3], c[0].shape) for c in self.chunks])
        if keep is None:
            self.chunks, self.notes = [], []
            return units, who, write, note, notes
        mine = keep(units)
        rest = ~mine
        self.chunks = [(units[rest], who[rest], write[rest], note[rest])] if rest.any() else []
        return units[mine], who[mine], write[mine], note[mine], notes


def _dense_race(entries: tuple[Any, ...], size: int) -> tuple[str, int, list[int]] | None:
    """``_race`` for units below ``size`` (shared memory words), without sorting when the
    entries are many."""
    units, who, write = entries[:3]
    if len(units) * 8 < size:
        return _race(entries, once=False)
    low = np.full(size, np.iinfo(np.int32).max, dtype=np.int32)
    high = np.full(size, -1, dtype=np.int32)
    np.minimum.at(low, units, who)
    np.maximum.at(high, units, who)
    written = np.zeros(size, dtype=bool)
    written[units[write]] = True
    bad = written & (high >= 0) & (low != high)
    if not bad.any():
        return None
    unit = int(np.flatnonzero(bad)[0])
    members = np.flatnonzero(units == unit)
    first = int(members[write[members]][0])
    other = int(members[who[members] != who[first]][0])
    return "race", unit, [first, other]


def _race(entries: tuple[Any, ...], once: bool) -> tuple[str, int, list[int]] | None:
    """The first conflict among ``entries`` (units, who, write, ...): ('race' or 'twice',
    the unit, the two entries involved), or None. ``once``: a unit may be written only once
    (global memory in one launch)."""
    units, who, write = entries[:3]
    order = np.argsort(units, kind="stable")
    u, w, wr = units[order], who[order], write[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    written = np.logical_or.reduceat(wr, starts)
    mixed = np.minimum.reduceat(w, starts) != np.maximum.reduceat(w, starts)
    bad = written & mixed
    kind = "race"
    if once:
        twice = np.add.reduceat(wr.astype(np.int64), starts) > 1
        if twice.any() and (not bad.any() or np.flatnonzero(twice)[0] < np.flatnonzero(bad)[0]):
            bad, kind = twice, "twice"
    if not bad.any():
        return None
    g = int(np.flatnonzero(bad)[0])
    stop = starts[g + 1] if g + 1 < len(starts) else len(u)
    members = order[starts[g] : stop]
    writers = [int(i) for i in members if write[i]]
    first = writers[0]
    if kind == "twice":
        return kind, int(u[starts[g]]), [first, writers[1]]
    other = next(int(i) for i in members if who[i] != who[first])
    return kind, int(u[starts[g]]), [first, other]


class Storage:
    """Bytes that buffers view (a tensor, a weight, the arena); its accesses are logged while a
    kernel that stores through one of its buffers runs."""

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("storage is a flat uint8 array")
        self.data = data
        self.name = name
        self.log: _Log | None = None


@dataclass
class Buffer:
    """A flat ``memref<?xT>`` argument: ``size`` elements of ``dtype`` at byte ``offset`` of
    ``storage`` (``size`` is the descriptor's: an access past it is out of bounds); ``label``
    names it in messages (default: the storage's name). An ``unwritten`` buffer (an output, an
    arena slice) remembers which of its elements some launch has stored: reading one that none
    has is a fault."""

    storage: Storage
    dtype: str
    offset: int = 0
    size: int = -1
    label: str = ""
    unwritten: bool = False
    _typed: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind = KINDS[self.dtype]
        if self.size < 0:
            self.size = (len(self.storage.data) - self.offset) // kind.size
        self.written = np.zeros(self.size, dtype=bool) if self.unwritten else None
        if self.offset % kind.size:
            raise ValueError(f"a {self.dtype} buffer at byte {self.offset} is misaligned")
        if self.offset + self.size * kind.size > len(self.storage.data):
            raise ValueError("the buffer extends past its storage")

    @property
    def kind(self) -> Kind:
        return KINDS[self.dtype]

    @property
    def name(self) -> str:
        return self.label or self.storage.name or "a buffer"

    def typed(self) -> np.ndarray:
        """The elements as stored (bf16 as its bits); writes go to the storage."""
        if self._typed is None:
            end = self.offset + self.size * self.kind.size
            self._typed = self.storage.data[self.offset : end].view(self.kind.mem)
        return self._typed

    def values(self) -> np.ndarray:
        """The elements in their register type (bf16/f16 as float32)."""
        return from_memory(self.kind, self.typed())

    def tensor(self, shape: Sequence[int] | None = None) -> torch.Tensor:
        """A copy as a torch tensor of the buffer's dtype (i8 for booleans)."""
        stored = self.typed().copy()
        if self.dtype == "bf16":
            out = torch.from_numpy(stored.view(np.int16)).view(torch.bfloat16)
        else:
            out = torch.from_numpy(stored)
        return out.reshape(tuple(shape)) if shape is not None else out

    @staticmethod
    def of(values: np.ndarray | torch.Tensor, dtype: str, name: str = "") -> Buffer:
        """A new buffer holding ``values`` (flattened) in ``dtype`` (``i1``: bytes), rounded
        to nearest even; a bf16 tensor keeps its bits."""
        kind = KINDS["i8" if dtype == "i1" else dtype]
        if isinstance(values, torch.Tensor):
            flat = values.detach().cpu().reshape(-1)
            if flat.dtype == torch.bfloat16:
                bits = flat.view(torch.int16).numpy().view(np.uint16)
                stored = bits if kind.name == "bf16" else to_memory(kind, bf16_bits_to_f32(bits))
            else:
                stored = to_memory(kind, flat.numpy())
        else:
            stored = to_memory(kind, np.asarray(values).reshape(-1))
        data = np.ascontiguousarray(stored).view(np.uint8).reshape(-1).copy()
        return Buffer(Storage(data, name), kind.name)

    @staticmethod
    def poisoned(count: int, dtype: str, name: str = "") -> Buffer:
        """``count`` elements of all-ones bytes: NaN in every float type, -1 as an integer."""
        kind = KINDS["i8" if dtype == "i1" else dtype]
        data = np.full(count * kind.size, 0xFF, np.uint8)
        return Buffer(Storage(data, name), kind.name, unwritten=True)


class _Space:
    """Shared memory of every block of a batch: ``size`` bytes each (``stride`` apart),
    poisoned with all-ones bytes (NaN), its accesses logged per barrier phase, with the 2-byte
    words an async copy is still writing (``flying`` of them)."""

    def __init__(self, size: int, blocks: int, name: str) -> None:
        self.size = size
        self.stride = max(16, -(-size // 16) * 16)
        self.name = name
        total = self.stride * blocks
        self.data = np.full(total, 0xFF, dtype=np.uint8)
        self.log = _Log()
        self.inflight = np.zeros(total // 2, dtype=bool)
        self.flying = 0
        self.written = np.zeros(total // 2, dtype=bool)


@dataclass(frozen=True)
class _SharedRef:
    """A shared-memory memref: its space, the byte offset of element 0 within the block (per
    thread, or uniform), the static shape and the element kind (identity layout)."""

    space: _Space
    base: np.ndarray
    shape: tuple[int, ...]
    kind: Kind
    strides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        out, step = [], 1
        for dim in reversed(self.shape):
            out.append(step)
            step *= dim
        object.__setattr__(self, "strides", tuple(reversed(out)))


@dataclass(frozen=True)
class _ConstRef:
    """A constant ``memref.global`` (global memory, read only)."""

    data: np.ndarray
    kind: Kind
    name: str


# ---------------------------------------------------------------------------------------------
# One batch of blocks in flight


@dataclass
class _Launch:
    grid: tuple[int, int, int]
    threads: int  # per block
    lanes: int  # per block, rounded up to whole warps
    smem: int
    stats: dict[str, list[int]] | None = None

    def count_conflicts(self, what: str, byte: np.ndarray) -> None:
        """Bank conflicts of 16-byte accesses, 8 threads (one 128-byte wavefront) a phase:
        the extra wavefronts are the most distinct addresses that share a 16-byte bank group
        (bytes // 16 % 8), less one."""
        if self.stats is None or len(byte) % 8:
            return
        address = byte.reshape(-1, 8)
        group = address // 16 % 8
        same_group = group[:, :, None] == group[:, None, :]
        same = address[:, :, None] == address[:, None, :]
        first = ~np.tril(same, k=-1).any(axis=2)  # first thread of each distinct address
        wavefronts = (same_group & first[:, None, :]).sum(axis=2).max(axis=1)
        entry = self.stats.setdefault(what, [0, 0])
        entry[0] += int((wavefronts - 1).sum())
        entry[1] += len(address)


@dataclass
class _Copies:
    """Async copies issued by one op and not landed yet: issuing threads, their group,
    destination bytes (absolute in the space) and the bytes to land."""

    space: _Space
    thread: np.ndarray
    group: np.ndarray
    dst: np.ndarray
    payload: np.ndarray

    def subset(self, keep: np.ndarray) -> _Copies:
        return _Copies(
            self.space, self.thread[keep], self.group[keep], self.dst[keep], self.payload[keep]
        )


class _Run:
    """Registers, the active mask and the shared memories of one batch of blocks."""

    def __init__(self, kernel: Kernel, launch: _Launch, block_ids: np.ndarray) -> None:
        self.kernel = kernel
        self.launch = launch
        self.regs: list[Any] = [None] * kernel.slot_count
        self.blocks = len(block_ids)
        lanes = launch.lanes
        self.T = self.blocks * lanes
        thread = np.arange(self.T, dtype=np.int64)
        self.tid = thread % lanes
        self.block_of = thread // lanes
        self.warp = (thread // WARP).astype(np.int32)
        gx, gy, _ = launch.grid
        ids = block_ids[self.block_of]
        xyz = (ids % gx, (ids // gx) % gy, ids // (gx * gy))
        self.block_xyz = tuple(v[:1] for v in xyz) if self.blocks == 1 else xyz
        self.gtid = (ids * launch.threads + self.tid).astype(np.int32)
        self.set_active(self.tid < launch.threads)
        self.shared = _Space(launch.smem, self.blocks, "dynamic shared memory")
        self.statics: dict[str, _Space] = {}
        self.committed = np.zeros(self.T, dtype=np.int64)
        self.pending: list[_Copies] = []

    def set_active(self, mask: np.ndarray) -> None:
        self.active = mask
        self.full = bool(mask.all())
        self.sel: slice | np.ndarray = slice(None) if self.full else np.flatnonzero(mask)
        # per active thread: warp, global thread id, block within the batch
        self.warp_sel = self.warp[self.sel]
        self.gtid_sel = self.gtid[self.sel]
        self.block_sel = self.block_of[self.sel]

    def lanes(self, value: np.ndarray) -> np.ndarray:
        """``value`` at the active threads (a uniform value repeated first)."""
        if value.shape[0] != self.T:
            value = value.repeat(self.T, axis=0)
        return value if self.full else value[self.sel]

    def spread(self, active_values: np.ndarray) -> np.ndarray:
        """Values of the active threads as an array over all threads (zero elsewhere)."""
        if self.full:
            return active_values
        out = np.zeros((self.T, *active_values.shape[1:]), dtype=active_values.dtype)
        out[self.sel] = active_values
        return out

    def thread(self, gtid: int) -> str:
        """'block (x, y, z) thread t' of a global thread id."""
        threads = self.launch.threads
        gx, gy, _ = self.launch.grid
        b = gtid // threads
        return f"block ({b % gx}, {b // gx % gy}, {b // (gx * gy)}) thread {gtid % threads}"

    def where(self, bad: np.ndarray) -> str:
        """The first active thread flagged in ``bad`` (over the active threads)."""
        rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
        return self.thread(int(self.gtid_sel[rows[0]])) if len(rows) else "a thread"

    def warp_name(self, warp: int) -> str:
        per_block = self.launch.lanes // WARP
        return self.thread(int(self.gtid[warp * WARP])).split(" thread")[0] + (
            f" warp {warp % per_block}"
        )

    def first(self, values: np.ndarray, bad: np.ndarray) -> int:
        rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
        return int(values.reshape(len(values), -1)[rows[0], 0])


@dataclass(frozen=True)
class _Op:
    """What a step knows of its op, for messages."""

    name: str
    location: str

    def fault(self, run: _Run, message: str) -> KernelFault:
        return KernelFault(f"{run.kernel.name}: {self.name} at {self.location}: {message}")


# ---------------------------------------------------------------------------------------------
# Memory access


def _addresses(run: _Run, op: _Op, ref: Any, idx: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Per active thread: the element index (global) or absolute byte (shared) of ``width``
    consecutive elements at ``ref[idx]``, bounds checked."""
    if isinstance(ref, Buffer | _ConstRef):
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
    at = _addresses(run, op, ref, idx, width)
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


# ---------------------------------------------------------------------------------------------
# A kernel: its ops compiled once into steps (closures over register slots)

Rule = Callable[["Kernel", ir.Operation, _Op], Step | None]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


class Kernel:
    """One ``gpu.func`` compiled for interpretation; ``launch`` runs it."""

    def __init__(self, func: ir.Operation | ir.OpView) -> None:
        func = func.operation
        self.name = ir.StringAttr(func.attributes["sym_name"]).value
        self.slots: dict[ir.Value, int] = {}
        self.globals = _module_globals(func)
        entry = func.regions[0].blocks[0]
        self.params: list[Kind | None] = []
        self.buffer_kinds: list[Kind | None] = []
        for arg in entry.arguments:
            is_buffer = isinstance(arg.type, ir.MemRefType)
            self.params.append(None if is_buffer else kind_of(arg.type))
            self.buffer_kinds.append(kind_of(arg.type) if is_buffer else None)
        self.arg_slots = [self.slot(arg) for arg in entry.arguments]
        self.chip = _chip(func)
        self.known_block: tuple[int, ...] | None = None
        if "known_block_size" in func.attributes:
            self.known_block = tuple(ir.DenseI32ArrayAttr(func.attributes["known_block_size"]))
        self.stored: set[int] = set()
        for i, arg in enumerate(entry.arguments):
            for use in arg.uses:
                if use.owner.name in ("memref.store", "vector.store") and use.operand_number == 1:
                    self.stored.add(i)
        self.body, _ = self.compile_block(entry)
        # Only the register count is needed from here on: let go of the IR.
        self.slot_count = len(self.slots)
        self.slots = {}

    def slot(self, value: ir.Value) -> int:
        found = self.slots.get(value)
        if found is None:
            found = self.slots[value] = len(self.slots)
        return found

    def ins(self, op: ir.Operation) -> list[int]:
        return [self.slot(v) for v in op.operands]

    def compile_block(self, block: ir.Block) -> tuple[list[Step], list[int]]:
        """The steps of ``block`` and the slots its terminator yields."""
        for arg in block.arguments:
            self.slot(arg)
        steps: list[Step] = []
        yields: list[int] = []
        for view in block.operations:
            op = view.operation
            name = op.name
            if name in ("scf.yield", "gpu.return"):
                yields = self.ins(op)
                continue
            make = RULES.get(name)
            if make is None:
                raise NotImplementedError(f"{self.name}: the interpreter has no rule for {name}")
            for result in op.results:
                self.slot(result)
            step = make(self, op, _Op(name, str(op.location)))
            if step is not None:
                steps.append(step)
        return steps, yields

    def launch(
        self,
        grid: Sequence[int],
        block: Sequence[int],
        smem: int,
        args: Sequence[Buffer | int | float],
        max_threads: int = MAX_BATCH_THREADS,
        stats: dict[str, list[int]] | None = None,
    ) -> None:
        """Runs the kernel on ``grid`` x ``block`` threads with ``smem`` bytes of dynamic
        shared memory; buffers are updated in place. Raises ``KernelFault``.

        ``stats``, when given, accumulates shared-memory bank conflicts of ldmatrix and 16-byte
        cp.async: ``{"ldmatrix": [extra wavefronts, phases], "cp.async": [...]}``."""
        if tuple(block[1:]) != (1, 1):
            raise NotImplementedError("the interpreter runs 1-D blocks")
        if self.known_block is not None and tuple(block) != self.known_block:
            raise KernelFault(
                f"{self.name} was compiled for blocks of {list(self.known_block)} threads "
                f"(known_block_size), launched with {list(block)}"
            )
        if len(args) != len(self.params):
            raise KernelFault(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        values = [self._argument(i, a) for i, a in enumerate(args)]
        threads = int(block[0])
        lanes = -(-threads // WARP) * WARP
        g = (int(grid[0]), int(grid[1]), int(grid[2]))
        limit = MAX_SMEM.get(self.chip, MAX_SMEM["sm_80"])
        if min(g) < 1 or g[0] >= 2**31 or max(g[1:]) > 65535 or not 1 <= threads <= 1024:
            raise KernelFault(f"{self.name}: no GPU launches a grid of {list(g)} x {threads}")
        if smem > limit:
            raise KernelFault(
                f"{self.name}: {smem} bytes of shared memory exceed the {limit} a {self.chip} "
                "block may have"
            )
        count = g[0] * g[1] * g[2]
        per_batch = max(1, min(count, max_threads // lanes, MAX_BATCH_SMEM // max(smem, 1)))
        tracked = {}
        for i in self.stored:
            storage = values[i].storage
            tracked[id(storage)] = storage
        for storage in tracked.values():
            storage.log = _Log()
        launch = _Launch(g, threads, lanes, int(smem), stats)
        try:
            with np.errstate(all="ignore"):
                for first in range(0, count, per_batch):
                    ids = np.arange(first, min(first + per_batch, count), dtype=np.int64)
                    run = _Run(self, launch, ids)
                    for slot, value in zip(self.arg_slots, values, strict=True):
                        run.regs[slot] = value
                    for step in self.body:
                        step(run)
                    for space in [run.shared, *run.statics.values()]:
                        check_shared(run, space)
                for storage in tracked.values():
                    check_global(run, storage)
        finally:
            for storage in tracked.values():
                storage.log = None

    def _argument(self, i: int, value: Buffer | int | float) -> Any:
        kind = self.params[i]
        if kind is None:
            expected = self.buffer_kinds[i]
            assert expected is not None
            if not isinstance(value, Buffer):
                raise KernelFault(f"{self.name}: argument {i} takes a Buffer, got {value!r}")
            if value.kind.name != expected.name:
                raise KernelFault(
                    f"{self.name}: argument {i} is a {expected.name} buffer, got {value.dtype}"
                )
            return value
        if isinstance(value, Buffer):
            raise KernelFault(f"{self.name}: argument {i} is a {kind.name} scalar, got a buffer")
        if kind.name in ("i32", "i64"):
            bounds = np.iinfo(kind.reg)
            if not bounds.min <= int(value) <= bounds.max:
                raise KernelFault(f"{self.name}: argument {i} = {value} does not fit {kind.name}")
        return np.array([value], dtype=kind.reg)


@dataclass(frozen=True)
class _GlobalSpec:
    """A ``memref.global``: per-block shared memory (workgroup) or a constant table."""

    name: str
    shape: tuple[int, ...]
    kind: Kind
    data: np.ndarray | None


def _chip(func: ir.Operation) -> str:
    """The ``chip`` of the enclosing gpu.module's NVVM target (``sm_80`` when unknown)."""
    parent = func.parent
    targets = (
        parent.attributes["targets"]
        if parent is not None and "targets" in parent.attributes
        else None
    )
    found = re.search(r'chip = "(sm_\w+)"', str(targets)) if targets is not None else None
    return found.group(1) if found else "sm_80"


def _module_globals(func: ir.Operation) -> dict[str, _GlobalSpec]:
    out: dict[str, _GlobalSpec] = {}
    parent = func.parent
    if parent is None:
        return out
    for view in parent.regions[0].blocks[0].operations:
        op = view.operation
        if op.name != "memref.global":
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        type_ = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
        kind = kind_of(type_)
        data = None
        if "workgroup" not in str(type_.memory_space):
            initial = op.attributes["initial_value"]
            data = round_to(kind, np.array(ir.DenseElementsAttr(initial)).reshape(-1))
        out[name] = _GlobalSpec(name, tuple(type_.shape), kind, data)
    return out


def kernels_in(module: ir.Module | ir.Operation) -> dict[str, ir.Operation]:
    """Every ``gpu.func`` of ``module`` (inside its ``gpu.module``s) by name."""
    found: dict[str, ir.Operation] = {}

    def visit(op: ir.Operation) -> None:
        for region in op.regions:
            for block in region.blocks:
                for child in block.operations:
                    child_op = child.operation
                    if child_op.name == "gpu.func":
                        found[ir.StringAttr(child_op.attributes["sym_name"]).value] = child_op
                    elif child_op.name in ("gpu.module", "builtin.module"):
                        visit(child_op)

    visit(module.operation if isinstance(module, ir.Module) else module)
    return found


def run_kernel(
    module: ir.Module, info: Any, bindings: Mapping[str, Buffer | int | float], **options: Any
) -> None:
    """Runs the kernel of ``info`` (a ``KernelInfo``) in ``module`` with its parameters bound
    by name; the grid is ``info.grid`` evaluated over the integer bindings."""
    from tessera.runtime import expr

    with module.context:
        kernel = Kernel(kernels_in(module)[info.name])
    scalars = {k: v for k, v in bindings.items() if isinstance(v, int)}
    grid = [expr.evaluate(g, scalars) for g in info.grid]
    kernel.launch(
        grid, info.block, info.smem_bytes, [bindings[p.name] for p in info.params], **options
    )


# ---------------------------------------------------------------------------------------------
# Rules: arith


def _unsigned(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.bool_:
        return x
    return x.astype(UNSIGNED[x.dtype.type])


def _signed_like(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    return x.astype(like.dtype)


def _nonzero(x: np.ndarray) -> np.ndarray:
    return np.where(x == 0, 1, x)


def _divsi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    b = _nonzero(b)
    q = a // b
    return np.where((q < 0) & (q * b != a), q + 1, q).astype(a.dtype)


INT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "arith.addi": np.add,
    "arith.subi": np.subtract,
    "arith.muli": np.multiply,
    "arith.andi": np.bitwise_and,
    "arith.ori": np.bitwise_or,
    "arith.xori": np.bitwise_xor,
    "arith.maxsi": np.maximum,
    "arith.minsi": np.minimum,
    "arith.maxui": lambda a, b: _signed_like(np.maximum(_unsigned(a), _unsigned(b)), a),
    "arith.minui": lambda a, b: _signed_like(np.minimum(_unsigned(a), _unsigned(b)), a),
    "arith.divui": lambda a, b: _signed_like(_unsigned(a) // _unsigned(_nonzero(b)), a),
    "arith.remui": lambda a, b: _signed_like(_unsigned(a) % _unsigned(_nonzero(b)), a),
    "arith.divsi": _divsi,
    "arith.remsi": lambda a, b: (a - _divsi(a, b) * _nonzero(b)).astype(a.dtype),
    "arith.floordivsi": lambda a, b: (a // _nonzero(b)).astype(a.dtype),
    "arith.ceildivsi": lambda a, b: (-((-a) // _nonzero(b))).astype(a.dtype),
    "arith.ceildivui": lambda a, b: _signed_like(
        -(-_unsigned(a).astype(np.int64) // _unsigned(_nonzero(b)).astype(np.int64)), a
    ),
    "arith.shli": lambda a, b: np.left_shift(a, b.astype(a.dtype)),
    "arith.shrsi": lambda a, b: np.right_shift(a, b.astype(a.dtype)),
    "arith.shrui": lambda a, b: _signed_like(np.right_shift(_unsigned(a), _unsigned(b)), a),
}
FLOAT_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "arith.addf": np.add,
    "arith.subf": np.subtract,
    "arith.mulf": np.multiply,
    "arith.divf": np.divide,
    "arith.remf": np.fmod,
    "arith.maxnumf": np.fmax,
    "arith.minnumf": np.fmin,
    "arith.maximumf": np.maximum,
    "arith.minimumf": np.minimum,
    "math.copysign": np.copysign,
    "math.powf": lambda a, b: np.power(a.astype(np.float64), b),
    "math.atan2": lambda a, b: np.arctan2(a.astype(np.float64), b),
}


def _elementwise(k: Kernel, op: ir.Operation, fn: Callable[..., np.ndarray]) -> Step:
    ins = k.ins(op)
    out = k.slot(op.results[0])
    if len(ins) == 1:
        (a,) = ins

        def unary(run: _Run) -> None:
            r = run.regs
            r[out] = fn(r[a])

        return unary
    if len(ins) == 2:
        a, b = ins

        def binary(run: _Run) -> None:
            r = run.regs
            r[out] = fn(r[a], r[b])

        return binary
    if len(ins) == 3:
        a, b, c = ins

        def ternary(run: _Run) -> None:
            r = run.regs
            r[out] = fn(r[a], r[b], r[c])

        return ternary

    def nary(run: _Run) -> None:
        r = run.regs
        r[out] = fn(*[r[i] for i in ins])

    return nary


def _rounded(op: ir.Operation, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``fn`` with its result rounded to the op's result type when that is bf16/f16."""
    kind = kind_of(op.results[0].type)
    if kind.name in ("bf16", "f16"):
        return lambda *xs: round_to(kind, fn(*xs))
    if kind.name == "f32":
        return lambda *xs: np.asarray(fn(*xs)).astype(np.float32, copy=False)
    return fn


@rule(*INT_BINARY)
def _int_binary(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    fn = INT_BINARY[op.name]
    if kind_of(op.results[0].type).name == "i1" and op.name in ("arith.addi", "arith.xori"):
        fn = np.logical_xor
    return _elementwise(k, op, fn)


@rule(*FLOAT_BINARY)
def _float_binary(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, _rounded(op, FLOAT_BINARY[op.name]))


@rule("arith.negf")
def _negf(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, np.negative)


@rule("arith.constant")
def _constant(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])
    type_ = op.results[0].type
    kind = kind_of(type_)
    attr = op.attributes["value"]
    if isinstance(type_, ir.VectorType):
        dense = ir.DenseElementsAttr(attr)
        if dense.is_splat:
            number = _number(dense.get_splat_value(), kind)
            value = np.full((1, *type_.shape), number)
        else:
            value = np.array(dense).reshape(1, *type_.shape)
    else:
        value = np.array([_number(attr, kind)])
    value = round_to(kind, value) if kind.name in FLOATS else value.astype(kind.reg)

    def constant(run: _Run) -> None:
        run.regs[out] = value

    return constant


def _number(attr: ir.Attribute, kind: Kind) -> float | int | bool:
    if isinstance(attr, ir.FloatAttr):
        return ir.FloatAttr(attr).value
    if isinstance(attr, ir.BoolAttr):
        return bool(ir.BoolAttr(attr).value)
    value = ir.IntegerAttr(attr).value
    return value != 0 if kind.name == "i1" else value


CMPI: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: np.equal,
    1: np.not_equal,
    2: np.less,
    3: np.less_equal,
    4: np.greater,
    5: np.greater_equal,
    6: lambda a, b: _unsigned(a) < _unsigned(b),
    7: lambda a, b: _unsigned(a) <= _unsigned(b),
    8: lambda a, b: _unsigned(a) > _unsigned(b),
    9: lambda a, b: _unsigned(a) >= _unsigned(b),
}


def _unordered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isnan(a) | np.isnan(b)


CMPF: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: lambda a, b: np.zeros(np.broadcast(a, b).shape, dtype=bool),
    1: np.equal,
    2: np.greater,
    3: np.greater_equal,
    4: np.less,
    5: np.less_equal,
    6: lambda a, b: (a != b) & ~_unordered(a, b),
    7: lambda a, b: ~_unordered(a, b),
    8: lambda a, b: (a == b) | _unordered(a, b),
    9: lambda a, b: ~(a <= b),
    10: lambda a, b: ~(a < b),
    11: lambda a, b: ~(a >= b),
    12: lambda a, b: ~(a > b),
    13: np.not_equal,
    14: _unordered,
    15: lambda a, b: np.ones(np.broadcast(a, b).shape, dtype=bool),
}


@rule("arith.cmpi")
def _cmpi(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, CMPI[ir.IntegerAttr(op.attributes["predicate"]).value])


@rule("arith.cmpf")
def _cmpf(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, CMPF[ir.IntegerAttr(op.attributes["predicate"]).value])


@rule("arith.select")
def _select(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    def select(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ndim = max(a.ndim, b.ndim)
        if c.ndim < ndim:
            c = c.reshape(c.shape[0], *([1] * (ndim - c.ndim)))
        return np.where(c, a, b)

    return _elementwise(k, op, select)


@rule(
    "arith.index_cast",
    "arith.index_castui",
    "arith.extsi",
    "arith.extui",
    "arith.trunci",
    "arith.extf",
    "arith.truncf",
    "arith.sitofp",
    "arith.uitofp",
    "arith.fptosi",
    "arith.fptoui",
    "arith.bitcast",
)
def _cast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    source = kind_of(op.operands[0].type)
    target = kind_of(op.results[0].type)
    name = op.name
    unsigned = name in ("arith.index_castui", "arith.extui", "arith.uitofp", "arith.fptoui")

    def cast(x: np.ndarray) -> np.ndarray:
        if name == "arith.bitcast":
            return from_bits(target, to_bits(source, x))
        if target.name in FLOATS:
            if source.name not in FLOATS and unsigned:
                x = _unsigned(x)
            return round_to(target, x.astype(np.float64) if target.name != "f32" else x)
        if source.name in FLOATS:
            x = np.trunc(np.nan_to_num(x.astype(np.float64), nan=0.0))
            info_ = np.iinfo(np.uint64 if unsigned else target.reg)
            return np.clip(x, info_.min, info_.max).astype(target.reg)
        if target.name == "i1":
            return (x & 1).astype(bool)
        if unsigned and source.size < target.size:
            x = _unsigned(x)
        return x.astype(target.reg)

    return _elementwise(k, op, cast)


# ---------------------------------------------------------------------------------------------
# Rules: math and libdevice


def erf(x: np.ndarray) -> np.ndarray:
    return torch.special.erf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) * b + c


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


MATH: dict[str, Callable[..., np.ndarray]] = {
    "math.exp": np.exp,
    "math.exp2": np.exp2,
    "math.expm1": np.expm1,
    "math.log": np.log,
    "math.log2": np.log2,
    "math.log10": np.log10,
    "math.log1p": np.log1p,
    "math.sqrt": np.sqrt,
    "math.rsqrt": lambda x: 1.0 / np.sqrt(x),
    "math.cbrt": np.cbrt,
    "math.tanh": np.tanh,
    "math.sinh": np.sinh,
    "math.cosh": np.cosh,
    "math.sin": np.sin,
    "math.cos": np.cos,
    "math.tan": np.tan,
    "math.atan": np.arctan,
    "math.erf": erf,
    "math.absf": np.abs,
    "math.floor": np.floor,
    "math.ceil": np.ceil,
    "math.trunc": np.trunc,
    "math.round": _round_half_away,
    "math.roundeven": np.rint,
    "math.fma": _fma,
    "vector.fma": _fma,
}
# libdevice functions the kernels call (llvm.call @__nv_*): the same maths, in f32.
LIBDEVICE: dict[str, Callable[..., np.ndarray]] = {
    "__nv_fsqrt_rn": np.sqrt,
    "__nv_sqrtf": np.sqrt,
    "__nv_rsqrtf": MATH["math.rsqrt"],
    "__nv_expf": np.exp,
    "__nv_exp2f": np.exp2,
    "__nv_expm1f": np.expm1,
    "__nv_logf": np.log,
    "__nv_log2f": np.log2,
    "__nv_log1pf": np.log1p,
    "__nv_tanhf": np.tanh,
    "__nv_erff": erf,
    "__nv_sinf": np.sin,
    "__nv_cosf": np.cos,
    "__nv_fabsf": np.abs,
    "__nv_powf": lambda a, b: np.power(a.astype(np.float64), b),
    "__nv_fmaf": _fma,
    "__nv_fmaf_rn": _fma,
    "__nv_frcp_rn": lambda x: 1.0 / x.astype(np.float64),
    "__nv_fdiv_rn": lambda a, b: a.astype(np.float64) / b,
}


def flush_subnormal(x: np.ndarray) -> np.ndarray:
    """``.ftz``: a result below 2^-126 in magnitude becomes a zero of its sign."""
    return np.where(np.abs(x) < 2.0**-126, np.copysign(0.0, x), x)


# NVVM intrinsics by name: approximate MUFU ops, computed exactly here (then flushed).
INTRINSICS: dict[str, Callable[..., np.ndarray]] = {
    "llvm.nvvm.ex2.approx.ftz.f": lambda x: flush_subnormal(np.exp2(flush_subnormal(x))),
    "llvm.nvvm.ex2.approx.f": np.exp2,
    "llvm.nvvm.rcp.approx.ftz.f": lambda x: flush_subnormal(1.0 / flush_subnormal(x)),
    "llvm.nvvm.rsqrt.approx.ftz.f": lambda x: flush_subnormal(1.0 / np.sqrt(flush_subnormal(x))),
}


def _transcendental(op: ir.Operation, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``fn`` computed in float64 and rounded once to the result type."""
    kind = kind_of(op.results[0].type)
    f64 = np.float64
    if kind.name == "f32":
        if fn is _fma:
            return lambda a, b, c: (a.astype(f64) * b + c).astype(np.float32)
        if len(op.operands) == 1:
            return lambda x: fn(x.astype(f64)).astype(np.float32)
        return lambda *xs: fn(*(x.astype(f64) for x in xs)).astype(np.float32)
    return lambda *xs: round_to(kind, fn(*(np.asarray(x, dtype=f64) for x in xs)))


@rule(*MATH)
def _math(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, _transcendental(op, MATH[op.name]))


@rule("math.isnan", "math.isinf", "math.isfinite")
def _classify(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    fn = {"math.isnan": np.isnan, "math.isinf": np.isinf, "math.isfinite": np.isfinite}[op.name]
    return _elementwise(k, op, fn)


@rule("llvm.call")
def _libdevice(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
    if callee not in LIBDEVICE:
        raise NotImplementedError(f"{k.name}: the interpreter does not know {callee}")
    return _elementwise(k, op, _transcendental(op, LIBDEVICE[callee]))


@rule("llvm.call_intrinsic")
def _intrinsic(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    name = ir.StringAttr(op.attributes["intrin"]).value
    if name not in INTRINSICS:
        raise NotImplementedError(f"{k.name}: the interpreter does not know {name}")
    return _elementwise(k, op, _transcendental(op, INTRINSICS[name]))


@rule("nvvm.rcp.approx.ftz.f")
def _rcp(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, _transcendental(op, INTRINSICS["llvm.nvvm.rcp.approx.ftz.f"]))


@rule("llvm.inline_asm")
def _inline_asm(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    text = ir.StringAttr(op.attributes["asm_string"]).value
    if text.strip() != "mov.b64 $0, $1;":
        raise NotImplementedError(f"{k.name}: the interpreter does not run inline asm {text!r}")
    return _elementwise(k, op, lambda x: x)


@rule("llvm.extractvalue")
def _extractvalue(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    (position,) = list(ir.DenseI64ArrayAttr(op.attributes["position"]))
    return _elementwise(k, op, lambda s: s[:, position])


@rule("nvvm.convert.f32x2.to.bf16x2", "nvvm.convert.f32x2.to.f16x2")
def _convert_pair(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """cvt.rn.{bf16,f16}x2.f32 d, hi, lo: element 0 (the low half) is ``lo``."""
    attrs = {name: str(op.attributes[name]) for name in op.attributes}
    rounding, saturation = attrs.get("rnd", "rn"), attrs.get("sat", "none")
    if "rn>" not in rounding or "none" not in saturation or attrs.get("relu", "false") != "false":
        raise NotImplementedError(f"{k.name}: {op.name} with {attrs}")
    kind = kind_of(op.results[0].type)
    return _elementwise(
        k, op, lambda hi, lo: round_to(kind, np.stack(np.broadcast_arrays(lo, hi), axis=-1))
    )


# ---------------------------------------------------------------------------------------------
# Rules: vector


def _enum_word(attr: ir.Attribute) -> str:
    """The case of an enum attribute: ``#nvvm<shfl_kind bfly>`` → ``bfly``."""
    return re.split(r"[<\s]", str(attr).rstrip(">"))[-1]


def _lead(values: Sequence[np.ndarray]) -> int:
    return max(v.shape[0] for v in values)


@rule("vector.extract")
def _vector_extract(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    position = list(ir.DenseI64ArrayAttr(op.attributes["static_position"]))
    if any(p < 0 for p in position):
        raise NotImplementedError(f"{k.name}: vector.extract at a dynamic position")
    at: tuple[Any, ...] = (slice(None), *position)
    return _elementwise(k, op, lambda v: v[at])


@rule("vector.insert")
def _vector_insert(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    position = list(ir.DenseI64ArrayAttr(op.attributes["static_position"]))
    at: tuple[Any, ...] = (slice(None), *position)

    def insert(value: np.ndarray, dest: np.ndarray) -> np.ndarray:
        lead = _lead([value, dest])
        out = np.array(np.broadcast_to(dest, (lead, *dest.shape[1:])))
        out[at] = value
        return out

    return _elementwise(k, op, insert)


@rule("vector.from_elements")
def _from_elements(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    shape = shape_of(op.results[0].type)

    def build(*values: np.ndarray) -> np.ndarray:
        lead = _lead(values)
        stacked = np.stack([np.broadcast_to(v, (lead,)) for v in values], axis=1)
        return stacked.reshape(lead, *shape)

    return _elementwise(k, op, build)


@rule("vector.broadcast", "vector.splat")
def _broadcast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    shape = shape_of(op.results[0].type)

    def broadcast(value: np.ndarray) -> np.ndarray:
        inner = value.shape[1:]
        source = value.reshape(value.shape[0], *([1] * (len(shape) - len(inner))), *inner)
        return np.broadcast_to(source, (value.shape[0], *shape))

    return _elementwise(k, op, broadcast)


@rule("vector.shape_cast")
def _shape_cast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    shape = shape_of(op.results[0].type)
    return _elementwise(k, op, lambda v: v.reshape(v.shape[0], *shape))


@rule("vector.bitcast")
def _vector_bitcast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    source, target = kind_of(op.operands[0].type), kind_of(op.results[0].type)
    shape = shape_of(op.results[0].type)

    def bitcast(value: np.ndarray) -> np.ndarray:
        bits = to_bits(source, value)
        return from_bits(target, bits.reshape(*bits.shape[:-1], -1).view(BITS[target.size]))

    def reshaped(value: np.ndarray) -> np.ndarray:
        return bitcast(value).reshape(value.shape[0], *shape)

    return _elementwise(k, op, reshaped)


REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "maxnumf": lambda v: np.fmax.reduce(v, axis=1),
    "minnumf": lambda v: np.fmin.reduce(v, axis=1),
    "maximumf": lambda v: np.max(v, axis=1),
    "minimumf": lambda v: np.min(v, axis=1),
    "maxsi": lambda v: np.max(v, axis=1),
    "minsi": lambda v: np.min(v, axis=1),
    "and": lambda v: np.bitwise_and.reduce(v, axis=1),
    "or": lambda v: np.bitwise_or.reduce(v, axis=1),
    "xor": lambda v: np.bitwise_xor.reduce(v, axis=1),
}


@rule("vector.reduction")
def _reduction(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """add/mul in order, lane by lane (LLVM's ordered reduction without reassoc flags)."""
    combining = _enum_word(op.attributes["kind"])
    kind = kind_of(op.results[0].type)
    if combining in ("add", "mul"):
        ufunc = np.add if combining == "add" else np.multiply

        def ordered(v: np.ndarray, *acc: np.ndarray) -> np.ndarray:
            total = acc[0] if acc else v[:, 0]
            for lane in range(0 if acc else 1, v.shape[1]):
                total = round_to(kind, ufunc(total, v[:, lane]))
            return total

        return _elementwise(k, op, ordered)
    fn = REDUCTIONS[combining]
    return _elementwise(k, op, lambda v, *acc: fn(v) if not acc else fn(np.c_[v, acc[0]]))


@rule("vector.load", "memref.load")
def _load(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    ref, *idx = k.ins(op)
    out = k.slot(op.results[0])
    vector = op.name == "vector.load"
    shape = shape_of(op.results[0].type)
    width = int(np.prod(shape)) if vector else 1
    align = ir.IntegerAttr(op.attributes["alignment"]).value if "alignment" in op.attributes else 0

    def load_step(run: _Run) -> None:
        r = run.regs
        values = load(run, info, r[ref], [r[i] for i in idx], width, align)
        r[out] = values.reshape(len(values), *shape) if vector else values[:, 0]

    return load_step


@rule("vector.store", "memref.store")
def _store(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    value, ref, *idx = k.ins(op)
    align = ir.IntegerAttr(op.attributes["alignment"]).value if "alignment" in op.attributes else 0

    def store_step(run: _Run) -> None:
        r = run.regs
        store(run, info, r[ref], [r[i] for i in idx], r[value], align)

    return store_step


# ---------------------------------------------------------------------------------------------
# Rules: memref views, gpu ids, barriers


@rule("gpu.dynamic_shared_memory")
def _dynamic_shared(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])
    base = np.zeros(1, dtype=np.int64)

    def dynamic(run: _Run) -> None:
        run.regs[out] = _SharedRef(run.shared, base, (run.launch.smem,), KINDS["i8"])

    return dynamic


@rule("memref.view")
def _view(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    source, shift, *sizes = k.ins(op)
    out = k.slot(op.results[0])
    type_ = ir.MemRefType(op.results[0].type)
    kind = kind_of(type_)
    static = list(type_.shape)

    def view(run: _Run) -> None:
        r = run.regs
        src = r[source]
        if not isinstance(src, _SharedRef):
            raise info.fault(run, "views only shared memory here")
        offset = r[shift].astype(np.int64)
        if (run.lanes(offset) % kind.size).any():
            raise info.fault(run, f"a {kind.name} view at a misaligned byte offset")
        dims = iter(int(r[s][0]) for s in sizes)
        shape = tuple(d if d >= 0 else next(dims) for d in static)
        r[out] = _SharedRef(src.space, src.base + offset, shape, kind)

    return view


@rule("memref.get_global")
def _get_global(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    name = ir.FlatSymbolRefAttr(op.attributes["name"]).value
    spec = k.globals[name]
    out = k.slot(op.results[0])
    if spec.data is not None:
        constant = _ConstRef(spec.data, spec.kind, name)

        def constant_step(run: _Run) -> None:
            run.regs[out] = constant

        return constant_step
    size = int(np.prod(spec.shape)) * spec.kind.size
    base = np.zeros(1, dtype=np.int64)

    def workgroup(run: _Run) -> None:
        space = run.statics.get(name)
        if space is None:
            space = run.statics[name] = _Space(size, run.blocks, f"shared @{name}")
        run.regs[out] = _SharedRef(space, base, spec.shape, spec.kind)

    return workgroup


def _dimension(op: ir.Operation) -> int:
    return "xyz".index(_enum_word(op.attributes["dimension"]))


@rule("gpu.thread_id", "gpu.block_id", "gpu.grid_dim", "gpu.block_dim", "gpu.lane_id")
def _ids(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])
    name = op.name
    axis = _dimension(op) if name != "gpu.lane_id" else 0
    zero = np.zeros(1, dtype=np.int64)

    def ids(run: _Run) -> None:
        if name == "gpu.thread_id":
            value = run.tid if axis == 0 else zero
        elif name == "gpu.lane_id":
            value = run.tid % WARP
        elif name == "gpu.block_id":
            value = run.block_xyz[axis]
        elif name == "gpu.grid_dim":
            value = np.array([run.launch.grid[axis]], dtype=np.int64)
        else:
            value = np.array([run.launch.threads if axis == 0 else 1], dtype=np.int64)
        run.regs[out] = value

    return ids


@rule("gpu.barrier", "nvvm.barrier0")
def _barrier(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    def barrier(run: _Run) -> None:
        spaces = [run.shared, *run.statics.values()]
        if run.full:
            for space in spaces:
                check_shared(run, space)
            return
        threads = run.launch.threads
        counts = run.active.reshape(run.blocks, run.launch.lanes)[:, :threads].sum(axis=1)
        split = (counts != 0) & (counts != threads)
        if split.any():
            b = int(np.flatnonzero(split)[0])
            raise info.fault(
                run,
                f"{int(counts[b])} of {threads} threads of a block reach the barrier (it sits "
                "in control flow that diverges within the block)",
            )
        for space in spaces:
            check_shared(run, space, np.flatnonzero(counts))

    return barrier


# ---------------------------------------------------------------------------------------------
# Rules: structured control flow


def _uniform(run: _Run, value: np.ndarray) -> int | None:
    """The value every active thread holds, or None."""
    if value.shape[0] == 1:
        return int(value[0])
    lanes = run.lanes(value)
    first = int(lanes[0])
    return first if (lanes == first).all() else None


def _merge(mask: np.ndarray, new: Any, old: Any) -> Any:
    if new is None or old is None or new is old:
        return new
    ndim = max(np.ndim(new), np.ndim(old))
    return np.where(mask.reshape(len(mask), *([1] * (ndim - 1))), new, old)


@rule("scf.for")
def _for(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    lb, ub, st, *inits = k.ins(op)
    body = op.regions[0].blocks[0]
    iv = k.slot(body.arguments[0])
    iv_type = kind_of(body.arguments[0].type).reg
    args = [k.slot(a) for a in list(body.arguments)[1:]]
    steps, yields = k.compile_block(body)
    outs = [k.slot(r) for r in op.results]

    def loop(run: _Run) -> None:
        r = run.regs
        step = _uniform(run, r[st])
        if step is None or step <= 0:
            raise info.fault(run, "the loop step is not a positive block-uniform value")
        carried = [r[i] for i in inits]
        lo, hi = _uniform(run, r[lb]), _uniform(run, r[ub])
        if lo is not None and hi is not None:
            for i in range(lo, hi, step):
                r[iv] = np.array([i], dtype=iv_type)
                for a, v in zip(args, carried, strict=True):
                    r[a] = v
                for s in steps:
                    s(run)
                carried = [r[y] for y in yields]
        else:
            # Bounds differ between threads: run the union of the ranges, each thread active
            # (and its carried values updated) only inside its own.
            outer = run.active
            lo_t = np.broadcast_to(r[lb], (run.T,))
            hi_t = np.broadcast_to(r[ub], (run.T,))
            start, stop = int(run.lanes(lo_t).min()), int(run.lanes(hi_t).max())
            for i in range(start, stop, step):
                inside = outer & (i >= lo_t) & (i < hi_t) & ((i - lo_t) % step == 0)
                if not inside.any():
                    continue
                run.set_active(inside)
                r[iv] = np.array([i], dtype=iv_type)
                for a, v in zip(args, carried, strict=True):
                    r[a] = v
                for s in steps:
                    s(run)
                carried = [_merge(inside, r[y], c) for y, c in zip(yields, carried, strict=True)]
            run.set_active(outer)
        for o, v in zip(outs, carried, strict=True):
            r[o] = v

    return loop


@rule("scf.if")
def _if(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    (cond,) = k.ins(op)
    then_steps, then_yields = k.compile_block(op.regions[0].blocks[0])
    has_else = len(op.regions[1].blocks) > 0
    else_steps, else_yields = k.compile_block(op.regions[1].blocks[0]) if has_else else ([], [])
    outs = [k.slot(r) for r in op.results]

    def branch(run: _Run, steps: list[Step], yields: list[int]) -> list[Any]:
        for s in steps:
            s(run)
        return [run.regs[y] for y in yields]

    def if_step(run: _Run) -> None:
        r = run.regs
        c = r[cond]
        if c.shape[0] == 1:
            results = branch(
                run, *((then_steps, then_yields) if c[0] else (else_steps, else_yields))
            )
        else:
            outer = run.active
            taken = outer & c
            rest = outer & ~c
            if not rest.any():
                results = branch(run, then_steps, then_yields)
            elif not taken.any():
                results = branch(run, else_steps, else_yields)
            else:
                run.set_active(taken)
                first = branch(run, then_steps, then_yields)
                run.set_active(rest)
                second = branch(run, else_steps, else_yields)
                run.set_active(outer)
                results = [_merge(c, a, b) for a, b in zip(first, second, strict=True)]
        for o, v in zip(outs, results, strict=False):
            r[o] = v

    return if_step


# ---------------------------------------------------------------------------------------------
# Rules: warp collectives


def _full_warps(run: _Run, info: _Op) -> None:
    if run.full:
        return
    lanes = run.active.reshape(-1, WARP)
    partial = lanes.any(axis=1) & ~lanes.all(axis=1)
    if partial.any():
        w = int(np.flatnonzero(partial)[0])
        raise info.fault(
            run,
            f"only {int(lanes[w].sum())} of the 32 lanes of a warp execute this warp-collective "
            "op (it sits in divergent control flow)",
        )


def _shuffle_source(
    kind: str, b: np.ndarray, c: np.ndarray, lane: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """shfl.sync's source lane per the PTX ISA (``c``: clamp in bits 0-4, segment mask in
    bits 8-12); a lane whose source is out of range reads its own value."""
    b = b.astype(np.int64) & 31
    c = c.astype(np.int64)
    mask = (c >> 8) & 31
    clamp = c & 31
    max_lane = (lane & mask) | (clamp & ~mask)
    min_lane = lane & mask
    if kind == "up":
        j = lane - b
        valid = j >= max_lane
    elif kind == "down":
        j = lane + b
        valid = j <= max_lane
    elif kind == "bfly":
        j = lane ^ b
        valid = j <= max_lane
    else:
        j = min_lane | (b & ~mask)
        valid = j <= max_lane
    return np.where(valid, j, lane), valid


def _shuffled(
    run: _Run, info: _Op, value: np.ndarray, kind: str, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    _full_warps(run, info)
    lane = run.tid % WARP
    source, valid = _shuffle_source(kind, np.broadcast_to(b, (run.T,)), c, lane)
    if value.shape[0] == 1:
        return value, valid
    return value[(np.arange(run.T) - lane) + source], valid


@rule("gpu.shuffle")
def _gpu_shuffle(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    value, offset, width = k.ins(op)
    out, valid_out = (k.slot(r) for r in op.results)
    mode = _enum_word(op.attributes["mode"])
    kind = {"xor": "bfly", "down": "down", "up": "up", "idx": "idx"}[mode]

    def shuffle(run: _Run) -> None:
        r = run.regs
        w = r[width].astype(np.int64)
        c = ((32 - w) << 8) | (0 if kind == "up" else 31)
        r[out], r[valid_out] = _shuffled(run, info, r[value], kind, r[offset], c)

    return shuffle


@rule("nvvm.shfl.sync")
def _nvvm_shuffle(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    mask, value, offset, clamp = k.ins(op)
    out = k.slot(op.results[0])
    kind = _enum_word(op.attributes["kind"])
    if "return_value_and_is_valid" in op.attributes:
        raise NotImplementedError(f"{k.name}: nvvm.shfl.sync returning a validity bit")

    def shuffle(run: _Run) -> None:
        r = run.regs
        if _uniform(run, r[mask]) != -1:
            raise info.fault(run, "a shuffle over part of the warp")
        r[out], _ = _shuffled(run, info, r[value], kind, r[offset], r[clamp])

    return shuffle


# Fragment tables of mma.m16n8k16 / m16n8k8 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
# lane = 4 * group + t; each register holds two 16-bit elements (consecutive columns of A,
# consecutive rows of B) or one f32 of C/D.
GROUP = np.arange(WARP) // 4
QUAD = np.arange(WARP) % 4
PAIR = np.arange(2)


def _a_cell(reg: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, first column) of A register ``reg`` per lane (K = 16: a0..a3, K = 8: a0, a1)."""
    if k == 16:
        return GROUP + 8 * (reg % 2), 2 * QUAD + 8 * (reg // 2)
    return GROUP + 8 * reg, 2 * QUAD


def _b_cell(reg: int) -> tuple[np.ndarray, np.ndarray]:
    """(first row k, column n) of B register ``reg``."""
    return 2 * QUAD + 8 * reg, GROUP


def _c_cell(reg: int) -> tuple[np.ndarray, np.ndarray]:
    return GROUP + 8 * (reg // 2), 2 * QUAD + reg % 2


def _halves(value: np.ndarray, kind: Kind, T: int) -> np.ndarray:
    """A register of two 16-bit elements as (threads, 2) floats: a vector<2xT> or a packed
    i32 (element 0 in the low half)."""
    value = np.broadcast_to(value, (T, *value.shape[1:]))
    if value.dtype == np.int32:
        bits = value.view(np.uint32)
        pair = np.stack([bits & 0xFFFF, bits >> 16], axis=-1).astype(np.uint16)
        return from_bits(kind, pair)
    return value.reshape(T, 2)


def mma(
    run: _Run,
    info: _Op,
    kind: Kind,
    k: int,
    a: list[np.ndarray],
    b: list[np.ndarray],
    c: list[np.ndarray],
) -> list[np.ndarray]:
    """D = A·B + C of m16n8k{k} for every warp (float64 products and sums, rounded once);
    returns D's four registers per thread."""
    _full_warps(run, info)
    T = run.T
    W = T // WARP
    A = np.zeros((W, 16, k))
    B = np.zeros((W, k, 8))
    C = np.zeros((W, 16, 8))
    for reg, value in enumerate(a):
        row, col = _a_cell(reg, k)
        A[:, row[:, None], col[:, None] + PAIR] = _halves(value, kind, T).reshape(W, WARP, 2)
    for reg, value in enumerate(b):
        row, col = _b_cell(reg)
        B[:, row[:, None] + PAIR, col[:, None]] = _halves(value, kind, T).reshape(W, WARP, 2)
    for reg, value in enumerate(c):
        row, col = _c_cell(reg)
        C[:, row, col] = np.broadcast_to(value, (T,)).reshape(W, WARP)
    D = A @ B + C
    out = []
    for reg in range(4):
        row, col = _c_cell(reg)
        out.append(D[:, row, col].reshape(T).astype(np.float32))
    return out


def _mma_type(attr: ir.Attribute) -> str:
    return str(attr).split("<")[-1].rstrip(">")


@rule("nvvm.mma.sync")
def _nvvm_mma(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    na, nb, nc = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
    ins = k.ins(op)
    out = k.slot(op.results[0])
    shape = str(op.attributes["shape"])
    kdim = 16 if "k = 16" in shape else 8
    if "m = 16" not in shape or "n = 8" not in shape:
        raise NotImplementedError(f"{k.name}: mma shape {shape}")
    if "row" not in str(op.attributes["layoutA"]) or "col" not in str(op.attributes["layoutB"]):
        raise NotImplementedError(f"{k.name}: mma.sync layouts other than row.col")
    if "multiplicandAPtxType" in op.attributes:
        kind = KINDS[_mma_type(op.attributes["multiplicandAPtxType"])]
    else:
        kind = kind_of(op.operands[0].type)
    if kind.name not in ("bf16", "f16") or nc != 4 or "f32" not in str(op.results[0].type):
        raise NotImplementedError(f"{k.name}: mma.sync of {kind.name} into {op.results[0].type}")
    if (na, nb) != ((4, 2) if kdim == 16 else (2, 1)):
        raise NotImplementedError(f"{k.name}: mma.sync with {na} A and {nb} B registers")

    def step(run: _Run) -> None:
        r = run.regs
        regs = [r[i] for i in ins]
        d = mma(run, info, kind, kdim, regs[:na], regs[na : na + nb], regs[na + nb :])
        r[out] = np.stack(d, axis=1)

    return step


@rule("nvgpu.mma.sync")
def _nvgpu_mma(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    a, b, c = k.ins(op)
    out = k.slot(op.results[0])
    m, n, kdim_value = (ir.IntegerAttr(x).value for x in ir.ArrayAttr(op.attributes["mmaShape"]))
    kind = kind_of(op.operands[0].type)
    accumulator = kind_of(op.operands[2].type).name
    if (m, n) != (16, 8) or kind.name not in ("bf16", "f16") or accumulator != "f32":
        raise NotImplementedError(f"{k.name}: nvgpu.mma.sync {m}x{n}x{kdim_value} of {kind.name}")

    def step(run: _Run) -> None:
        r = run.regs
        A, B, C = (np.broadcast_to(r[i], (run.T, *r[i].shape[1:])) for i in (a, b, c))
        d = mma(
            run,
            info,
            kind,
            kdim_value,
            [A[:, i] for i in range(A.shape[1])],
            [B[:, i] for i in range(B.shape[1])],
            [C[:, 0, 0], C[:, 0, 1], C[:, 1, 0], C[:, 1, 1]],
        )
        r[out] = np.stack(d, axis=1).reshape(run.T, 2, 2)

    return step


@rule("nvgpu.ldmatrix")
def _ldmatrix(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """ldmatrix.sync.aligned.m8n8.x{tiles}[.trans].b16: lanes 8j..8j+7 address the rows of
    matrix j; lane l receives row l/4, columns 2(l%4), 2(l%4)+1 (``.trans``: that column's
    two rows)."""
    view: Any = op.opview
    ref = k.slot(view.srcMemref)
    idx = [k.slot(v) for v in view.indices]
    out = k.slot(op.results[0])
    tiles = ir.IntegerAttr(op.attributes["numTiles"]).value
    trans = ir.BoolAttr(op.attributes["transpose"]).value
    kind = kind_of(op.results[0].type)

    def step(run: _Run) -> None:
        _full_warps(run, info)
        r = run.regs
        memory = r[ref]
        outer = run.active
        addressing = outer & (run.tid % WARP < 8 * tiles)
        run.set_active(addressing)
        try:
            at = _addresses(run, info, memory, [r[i] for i in idx], 8)
            if not isinstance(memory, _SharedRef):
                raise info.fault(run, "ldmatrix reads shared memory only")
            _aligned(run, info, at, 16, "an ldmatrix row")
            run.launch.count_conflicts("ldmatrix", at % memory.space.stride)
            words = _words(at, 16, True)
            _not_flying(run, info, memory.space, words, "reads")
            _initialized(run, info, memory.space, words)
            memory.space.log.add(words, run.warp_sel, False, info, memory.space)
        finally:
            run.set_active(outer)
        raw = np.ascontiguousarray(memory.space.data[at[:, None] + np.arange(16)])
        rows = raw.view(np.uint16).reshape(-1, tiles, 8, 8)  # warp, matrix, row, column
        if trans:
            picked = rows[:, :, (2 * QUAD)[:, None] + PAIR, GROUP[:, None]]
        else:
            picked = rows[:, :, GROUP[:, None], (2 * QUAD)[:, None] + PAIR]
        fragments = from_bits(kind, picked.transpose(0, 2, 1, 3))  # warp, lane, matrix, pair
        values = fragments.reshape(-1, tiles, 2)
        if run.full:
            r[out] = values
            return
        full = np.zeros((run.T, tiles, 2), dtype=np.float32)
        warps = outer.reshape(-1, WARP).any(axis=1)
        full.reshape(-1, WARP, tiles, 2)[warps] = values.reshape(-1, WARP, tiles, 2)
        r[out] = full

    return step


# ---------------------------------------------------------------------------------------------
# Rules: async copies


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
