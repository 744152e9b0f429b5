"""What a tensor-parallel artifact records about its shard, without torch: the manifest
metadata's layout (ranks, this artifact's rank, each sharded weight's slice) and the constants
the compiled code and the runtime's communicator agree on (``collectives.py``). The compiler's
passes read this module, so it stays free of torch (a pass registry that imported torch would
slow every tessera-opt run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from tessera.errors import RuntimeInputError

from .manifest import ArtifactError

if TYPE_CHECKING:
    import torch

# The manifest metadata entry of a tensor-parallel artifact.
METADATA_KEY = "tensor_parallel"
# The weight through which the compiled code reaches the communicator.
COMMUNICATOR = "tessera.communicator"
# The callback's `kind` argument.
ALL_REDUCE = 0
ALL_GATHER = 1
# The callback's `dtype` argument: element types by their MLIR names.
DTYPE_CODES: dict[str, int] = {"f32": 0, "bf16": 1, "f16": 2, "f64": 3}


@dataclass(frozen=True)
class WeightShard:
    """The slice ``[offset, offset + size)`` along ``axis`` of a weight that a rank binds."""

    axis: int
    offset: int
    size: int

    def take(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """This slice of the full ``tensor``, as its own contiguous copy (so that the full
        tensor's memory can go once the caller drops it)."""
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise RuntimeInputError(
                f"weight '{name}' must be a torch.Tensor, found {type(tensor).__name__}"
            )
        if not 0 <= self.axis < tensor.dim() or tensor.shape[self.axis] < self.offset + self.size:
            raise RuntimeInputError(
                f"weight '{name}' is {list(tensor.shape)}; this rank binds rows "
                f"[{self.offset}, {self.offset + self.size}) of its axis {self.axis}, which it "
                "does not have (pass the full, unsharded weight)"
            )
        return tensor.narrow(self.axis, self.offset, self.size).clone(
            memory_format=torch.contiguous_format
        )


@dataclass(frozen=True)
class ShardLayout:
    """What a tensor-parallel artifact records: ``ranks``, its own ``rank`` and the slice of
    each sharded weight it binds (weights not listed are bound whole on every rank)."""

    ranks: int
    rank: int
    shards: Mapping[str, WeightShard]

    def to_json(self) -> dict[str, Any]:
        return {
            "ranks": self.ranks,
            "rank": self.rank,
            "communicator": COMMUNICATOR,
            "shards": {
                name: {"axis": s.axis, "offset": s.offset, "size": s.size}
                for name, s in sorted(self.shards.items())
            },
        }

    @classmethod
    def from_json(cls, data: object, where: str = f"metadata.{METADATA_KEY}") -> ShardLayout:
        """The layout recorded in a manifest; an ``ArtifactError`` names a malformed field."""
        if not isinstance(data, dict):
            raise ArtifactError(f"expected an object, found {type(data).__name__}", where)
        ranks, rank = data.get("ranks"), data.get("rank")
        if not _is_int(ranks) or ranks < 1:
            raise ArtifactError(f"ranks must be a positive integer, found {ranks!r}", where)
        if not _is_int(rank) or not 0 <= rank < ranks:
            raise ArtifactError(f"rank must be an integer in [0, {ranks}), found {rank!r}", where)
        raw = data.get("shards")
        if not isinstance(raw, dict):
            raise ArtifactError("shards must be an object (weight name → slice)", where)
        shards: dict[str, WeightShard] = {}
        for name, entry in raw.items():
            at = f"{where}.shards.{name}"
            if not isinstance(entry, dict):
                raise ArtifactError("expected an object with axis, offset and size", at)
            values = [entry.get(k) for k in ("axis", "offset", "size")]
            checked = [v for v in values if _is_int(v) and v >= 0]
            if len(checked) != 3 or checked[2] == 0:
                raise ArtifactError(
                    f"axis, offset and size must be integers (size positive), found {entry!r}", at
                )
            shards[name] = WeightShard(*checked)
        return cls(ranks, rank, shards)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def layout_of(metadata: Mapping[str, Any]) -> ShardLayout | None:
    """The shard layout of an artifact's manifest metadata, None for an unsharded artifact."""
    data = metadata.get(METADATA_KEY)
    return None if data is None else ShardLayout.from_json(data)
