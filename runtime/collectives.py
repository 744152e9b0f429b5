"""Tensor parallelism at run time: the communicator that compiled CPU code calls for its
collectives, and the weight slices each rank binds.

A tensor-parallel artifact (``tessera.compile(..., tensor_parallel=N)``) is one rank's shard of
the model. Its manifest's metadata (``METADATA_KEY``) names the ranks, this artifact's rank
and, per sharded weight, the slice of the full tensor it takes. Its programs take one more
weight, ``COMMUNICATOR``: an int64 tensor [1] holding the address of a C callback

    int32_t collective(int64_t kind, int64_t dtype, void *source, void *target,
                       int64_t outer, int64_t inner)

which the compiled code calls at each ``tessera.collective.*`` op (``lowering/cpu/
collectives.py``). ``source`` is a contiguous [outer, inner] buffer; for ``ALL_REDUCE`` the
sum over the ranks goes to ``target`` (same size), for ``ALL_GATHER`` ``target`` is
[outer, ranks, inner]: every rank's ``source`` side by side along the gathered axis. The
callback runs torch.distributed's collective (gloo on the CPU) on tensor views of the buffers.

One process runs each rank (``torchrun --nproc-per-node N``): torch.distributed is initialised
by the caller, or by ``init_from_env`` from the variables torchrun sets.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist

from tessera.errors import RuntimeInputError

from .shard_layout import (
    ALL_GATHER,
    ALL_REDUCE,
    COMMUNICATOR,
    DTYPE_CODES,
    METADATA_KEY,
    ShardLayout,
    WeightShard,
    layout_of,
)

# The layout's names are re-exported: the runtime's users read them from here.
__all__ = [
    "ALL_GATHER",
    "ALL_REDUCE",
    "COMMUNICATOR",
    "DTYPE_CODES",
    "METADATA_KEY",
    "CollectiveFunction",
    "Communicator",
    "RankWeights",
    "ShardLayout",
    "WeightShard",
    "check_world",
    "communicator",
    "init_from_env",
    "layout_of",
    "rank_weights",
    "run",
    "world",
]

_TORCH_DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.bfloat16,
    2: torch.float16,
    3: torch.float64,
}
# The environment torchrun sets for every process, read by ``init_from_env``.
_ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

CollectiveFunction = ctypes.CFUNCTYPE(
    ctypes.c_int32,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
)


def init_from_env() -> None:
    """Initialises torch.distributed (gloo) from torchrun's variables unless the caller did
    already; a ``RuntimeInputError`` names the variables that are missing."""
    if dist.is_initialized():
        return
    missing = [name for name in _ENVIRONMENT if name not in os.environ]
    if missing:
        raise RuntimeInputError(
            "tensor parallelism runs one process per rank: initialise torch.distributed "
            "first, or start the processes with torchrun, which sets "
            f"{', '.join(_ENVIRONMENT)} ({', '.join(missing)} not set)"
        )
    dist.init_process_group("gloo")
    # A process group still alive when the interpreter exits is torn down by static
    # destructors while gloo's threads run, which aborts the process ("terminate called
    # without an active exception"). The group initialised here is closed here.
    atexit.register(_close_group)


def _close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world(ranks: int) -> int:
    """This process's rank in a world of exactly ``ranks`` processes (torch.distributed
    initialised from the environment where the caller has not)."""
    init_from_env()
    size = dist.get_world_size()
    if size != ranks:
        raise RuntimeInputError(
            f"tensor_parallel={ranks} needs a world of {ranks} processes, one per rank; "
            f"torch.distributed has {size}"
        )
    return dist.get_rank()


class Communicator:
    """The callback that compiled code calls for its collectives, over torch.distributed's
    default process group. ``handle`` is the ``COMMUNICATOR`` weight: an int64 tensor [1]
    holding the callback's address (valid while this object lives; ``communicator()`` keeps
    one for the life of the process)."""

    def __init__(self) -> None:
        self._function = CollectiveFunction(self._collective)
        address = ctypes.cast(self._function, ctypes.c_void_p).value
        assert address, "ctypes gives a callback a non-null address"
        self.handle = torch.tensor([address], dtype=torch.int64)

    def _collective(
        self, kind: int, dtype: int, source: int, target: int, outer: int, inner: int
    ) -> int:
        # An exception cannot cross the compiled code: it is printed, and the nonzero status
        # makes the code stop the process (a rank that went on would desynchronise the rest).
        try:
            run(kind, dtype, source, target, outer, inner)
        except BaseException:
            print("tessera: a collective failed:", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
            return 1
        return 0


def run(kind: int, dtype: int, source: int, target: int, outer: int, inner: int) -> None:
    """One collective over the default process group on the buffers at ``source`` and
    ``target`` (see the module docstring)."""
    element = _TORCH_DTYPES.get(dtype)
    if element is None:
        raise RuntimeInputError(f"collective dtype code {dtype} is not one of {DTYPE_CODES}")
    count = outer * inner
    if count <= 0:
        return
    ranks = dist.get_world_size()
    if kind == ALL_REDUCE:
        result = _view(target, count, element)
        result.copy_(_view(source, count, element))
        dist.all_reduce(result)
    elif kind == ALL_GATHER:
        part = _view(source, count, element).view(outer, inner)
        parts = [torch.empty_like(part) for _ in range(ranks)]
        dist.all_gather(parts, part)
        gathered = _view(target, count * ranks, element).view(outer, ranks, inner)
        gathered.copy_(torch.stack(parts, dim=1))
    else:
        raise RuntimeInputError(f"collective kind {kind} is neither all_reduce nor all_gather")


def _view(address: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over ``count`` elements of memory owned by the compiled code (no copy)."""
    size = count * torch.empty((), dtype=dtype).element_size()
    memory = (ctypes.c_byte * size).from_address(address)
    return torch.frombuffer(memory, dtype=dtype, count=count)


_COMMUNICATOR: list[Communicator] = []


def communicator() -> Communicator:
    """The process's communicator (one callback for the process's lifetime: compiled code
    may hold its address in any bound artifact)."""
    if not _COMMUNICATOR:
        _COMMUNICATOR.append(Communicator())
    return _COMMUNICATOR[0]


class RankWeights(Mapping[str, torch.Tensor]):
    """A state dict of full weights seen as one rank's: each sharded weight is its slice (cut
    when it is read), ``COMMUNICATOR`` the communicator's handle, every other weight itself."""

    def __init__(
        self, layout: ShardLayout, weights: Mapping[str, torch.Tensor], handle: torch.Tensor
    ) -> None:
        self.layout = layout
        self._weights = weights
        self._handle = handle

    def __getitem__(self, name: str) -> torch.Tensor:
        if name == COMMUNICATOR:
            return self._handle
        tensor = self._weights[name]
        shard = self.layout.shards.get(name)
        return tensor if shard is None else shard.take(name, tensor)

    def __contains__(self, name: object) -> bool:
        return name == COMMUNICATOR or name in self._weights

    def __iter__(self) -> Iterator[str]:
        yield from self._weights
        yield COMMUNICATOR

    def __len__(self) -> int:
        return len(self._weights) + 1


def check_world(layout: ShardLayout) -> None:
    """This process is the rank ``layout`` was compiled for, in a world of its size."""
    if not dist.is_initialized():
        raise RuntimeInputError(
            f"this artifact is rank {layout.rank}'s shard of a {layout.ranks}-way "
            "tensor-parallel model; initialise torch.distributed (or run under torchrun) "
            "before binding it"
        )
    size, rank = dist.get_world_size(), dist.get_rank()
    if (size, rank) != (layout.ranks, layout.rank):
        raise RuntimeInputError(
            f"this artifact is rank {layout.rank}'s shard of a {layout.ranks}-way "
            f"tensor-parallel model, but this process is rank {rank} of {size}"
        )


def rank_weights(
    metadata: Mapping[str, Any], weights: Mapping[str, torch.Tensor]
) -> Mapping[str, torch.Tensor]:
    """What an artifact with manifest ``metadata`` binds from the full state dict
    ``weights``: for a tensor-parallel artifact this rank's slices and the communicator
    (checking that this process is the artifact's rank), else ``weights`` itself."""
    layout = layout_of(metadata)
    if layout is None:
        return weights
    check_world(layout)
    return RankWeights(layout, weights, communicator().handle)
