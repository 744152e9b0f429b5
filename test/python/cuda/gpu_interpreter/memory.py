"""Memory: global buffers, shared memory spaces and the access logs of the race and fault model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .kinds import KINDS, bf16_bits_to_f32, from_memory, to_memory

if TYPE_CHECKING:
    from .kinds import Kind
    from .state import _Op


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
