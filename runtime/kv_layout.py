"""How a compiled model's KV cache is laid out, as the compiler records it and generation reads
it: the names of the cached programs, their inputs and state buffers, the block size, and
which layers share a block table (a *group*: the global layers, and the sliding-window layers
of each window).

``tessera-insert-kv-cache`` (``passes/insert_kv_cache.py``) names its functions' arguments
with these names; a target writes ``KvLayout.to_json()`` into the manifest's metadata under
``METADATA_KEY``; ``runtime/kv_cache.py`` and ``runtime/generate.py`` read it back. The plan
executor (``runtime/program.py``) reads none of it: to it the cache is ``state`` buffers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tessera.errors import TesseraError

METADATA_KEY = "kv_cache"
# Programs: a chunk of prompt tokens (any length) and one new token per sequence.
PREFILL_PROGRAM = "prefill_kv"
DECODE_PROGRAM = "decode"
# A decode step that returns each sequence's greedy token [B, 1] (output ``tokens``) instead of
# its logits; GPU targets build it where the LM head can fuse with the token choice.
GREEDY_DECODE_PROGRAM = "decode_greedy"
# Inputs besides the token ids: rope positions [B, S], the cache index of each sequence's
# first new token [B] and its first valid key [B] (keys before it are left padding).
INPUT_IDS = "input_ids"
POSITIONS = "positions"
CACHE_INDEX = "cache_index"
KV_START = "kv_start"
LOGITS = "logits"
TOKENS = "tokens"
GLOBAL_GROUP = "global"


def table_input(group: str) -> str:
    """The block-table input [B, M] of a group."""
    return f"block_table.{group}"


def table_symbol(group: str) -> str:
    """The symbol of a group's block-table width M."""
    return f"table_{group}"


def blocks_symbol(group: str) -> str:
    """The symbol of a group's block count N (dim 0 of its layers' caches)."""
    return f"blocks_{group}"


def state_name(layer: int, part: str) -> str:
    """The state buffer of one layer's keys (``part`` k) or values (v)."""
    return f"kv.{layer}.{part}"


def _error(message: str, where: str) -> TesseraError:
    """An ``ArtifactError`` (a bad layout is a bad manifest). Imported here: the compiler's
    passes import this module for its names, and the manifest module imports torch."""
    from .manifest import ArtifactError

    return ArtifactError(message, where)


def group_name(window: int | None, windows: set[int]) -> str:
    """A group's name: ``global`` for layers without a window, ``sliding`` when the model has
    one window, else ``sliding_<w>``."""
    if window is None:
        return GLOBAL_GROUP
    return "sliding" if len(windows) == 1 else f"sliding_{window}"


@dataclass(frozen=True)
class CacheGroup:
    """Layers that share one block table: a window (sliding layers keep a ring of blocks that
    covers it) or None (global layers keep every token)."""

    name: str
    window: int | None


@dataclass(frozen=True)
class CacheLayer:
    """One attention layer's cache: its group and its key and value state buffers."""

    layer: int
    group: str
    k: str
    v: str


@dataclass(frozen=True)
class KvLayout:
    block_size: int
    groups: tuple[CacheGroup, ...]
    layers: tuple[CacheLayer, ...]

    def __post_init__(self) -> None:
        where = f"metadata.{METADATA_KEY}"
        if self.block_size <= 0:
            raise _error(f"block_size must be positive, found {self.block_size}", where)
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise _error(f"a group is named twice in {names}", f"{where}.groups")
        for group in self.groups:
            if group.window is not None and group.window <= 0:
                raise _error(
                    f"group '{group.name}' has window {group.window}; windows are positive",
                    f"{where}.groups",
                )
        for i, layer in enumerate(self.layers):
            if layer.group not in names:
                raise _error(
                    f"layer {layer.layer} names group '{layer.group}', which is not one of {names}",
                    f"{where}.layers[{i}]",
                )

    def group(self, name: str) -> CacheGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "block_size": self.block_size,
            "groups": [{"name": g.name, "window": g.window} for g in self.groups],
            "layers": [
                {"layer": layer.layer, "group": layer.group, "k": layer.k, "v": layer.v}
                for layer in self.layers
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> KvLayout:
        """The layout in a manifest's metadata; an ``ArtifactError`` names a bad field."""
        where = f"metadata.{METADATA_KEY}"
        if not isinstance(data, Mapping):
            raise _error(f"expected an object, found {type(data).__name__}", where)
        try:
            block_size = data["block_size"]
            groups = tuple(
                CacheGroup(str(g["name"]), None if g["window"] is None else int(g["window"]))
                for g in data["groups"]
            )
            layers = tuple(
                CacheLayer(int(x["layer"]), str(x["group"]), str(x["k"]), str(x["v"]))
                for x in data["layers"]
            )
        except (KeyError, TypeError, ValueError) as problem:
            raise _error(f"malformed KV-cache layout ({problem!r})", where) from None
        if not isinstance(block_size, int) or isinstance(block_size, bool):
            raise _error("block_size must be an integer", f"{where}.block_size")
        return cls(block_size, groups, layers)
