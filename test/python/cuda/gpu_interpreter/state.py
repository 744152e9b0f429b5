"""One batch of blocks in flight: its registers, active mask and shared memories."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .kinds import WARP, KernelFault
from .memory import Buffer, _Space

if TYPE_CHECKING:
    from .driver import Kernel


@dataclass
class _Launch:
    grid: tuple[int, int, int]
    threads: int  # per block
    lanes: int  # per block, rounded up to whole warps
    smem: int
    stats: dict[str, list[int]] | None = None
    # ids of the buffers the kernel may load before its griddepcontrol.wait (weights)
    early: frozenset[int] = frozenset()
    # The address regions of the global buffers whose address the kernel took (``grid_ops``).
    regions: dict[int, Buffer] = field(default_factory=dict)
    # Each L2 prefetch issued: its buffer, and the start bytes and lengths of its lanes.
    prefetched: list[tuple[Buffer, np.ndarray, np.ndarray]] = field(default_factory=list)

    def region_of(self, buffer: Buffer) -> int:
        for region, known in self.regions.items():
            if known is buffer:
                return region
        region = len(self.regions) + 1
        self.regions[region] = buffer
        return region

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
        # A kernel with a ``griddepcontrol.wait`` touches global memory only after it.
        self.waited = not kernel.waits

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


Step = Callable[[_Run], None]
