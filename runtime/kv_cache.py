"""A paged KV cache: fixed-size blocks, a block table per sequence, blocks reused once freed.

Each group of layers (``runtime/kv_layout.py``: the global layers, the sliding-window layers
of one window) has a pool of blocks and an allocator; a layer's keys and values are state
tensors [N, Hkv, BS, D] indexed by the pool's block ids. A sequence holds a list of blocks
per group, and its block table row lists them in logical order:

- global layers keep every token: logical block L holds tokens [L·BS, (L+1)·BS), so the table
  is ⌈max_len / BS⌉ wide;
- a sliding layer with window w needs, when a call appends C tokens, the last w − 1 tokens
  before them and the C new ones: a ring of R = ⌈(w + C − 1) / BS⌉ blocks (the compiled code
  reads logical block L at table column L mod R, so token t sits in slot t mod R·BS and any
  R·BS consecutive tokens have distinct slots). A Gemma 3 model (five sliding layers to each
  global one, windows of 512 or 1024 tokens) keeps a fraction of a full cache.

Blocks are taken as a sequence grows (``reserve``) and given back when it ends
(``release``); the allocator hands out the most recently freed block first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tessera.errors import RuntimeInputError

from .kv_layout import KvLayout, blocks_symbol, table_input
from .manifest import BufferSpec
from .memref import DTYPES


class BlockAllocator:
    """Block ids [0, ``blocks``) of one pool: ``allocate`` takes a free one (the most recently
    freed first, so a freed block is reused before a never-used one), ``free`` returns them."""

    def __init__(self, blocks: int) -> None:
        if blocks < 0:
            raise RuntimeInputError(f"a block pool cannot hold {blocks} blocks")
        self.blocks = blocks
        # A stack: the last id pushed is the next one handed out.
        self._free = list(range(blocks - 1, -1, -1))
        self._taken: set[int] = set()

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeInputError(
                f"the KV cache's pool of {self.blocks} blocks is exhausted; allocate a larger "
                "cache (more sequences or a longer max_len)"
            )
        block = self._free.pop()
        self._taken.add(block)
        return block

    def free(self, blocks: Iterable[int]) -> None:
        for block in blocks:
            if block not in self._taken:
                raise RuntimeInputError(f"block {block} is not allocated (freed twice?)")
            self._taken.remove(block)
            self._free.append(block)


@dataclass(frozen=True)
class GroupShape:
    """One group's table width (blocks per sequence) and pool size (blocks in all)."""

    width: int
    blocks: int


def group_shapes(
    layout: KvLayout, sequences: int, max_len: int, chunk: int
) -> dict[str, GroupShape]:
    """Each group's table width and pool size for ``sequences`` sequences of at most
    ``max_len`` tokens, calls appending at most ``chunk`` tokens each."""
    if sequences < 1 or max_len < 1 or chunk < 1:
        raise RuntimeInputError(
            f"a KV cache needs at least one sequence, token and token per call; found "
            f"sequences={sequences}, max_len={max_len}, chunk={chunk}"
        )
    size = layout.block_size
    full = -(-max_len // size)
    shapes = {}
    for group in layout.groups:
        width = full
        if group.window is not None:
            width = min(full, -(-(group.window + chunk - 1) // size))
        shapes[group.name] = GroupShape(width, width * sequences)
    return shapes


def _group_of(layout: KvLayout) -> dict[str, str]:
    """State buffer name → the group whose blocks index it."""
    return {name: layer.group for layer in layout.layers for name in (layer.k, layer.v)}


def _buffer_shape(spec: BufferSpec, group: str, blocks: int) -> list[int]:
    if not spec.shape or spec.shape[0] != blocks_symbol(group):
        raise RuntimeInputError(
            f"state '{spec.name}' has shape {list(spec.shape)}; a KV cache buffer is "
            f"[{blocks_symbol(group)}, kv heads, block size, head dim]"
        )
    rest = spec.shape[1:]
    if not all(isinstance(d, int) for d in rest):
        raise RuntimeInputError(f"state '{spec.name}' has symbolic dims past the first")
    return [blocks, *(int(d) for d in rest)]


def cache_bytes(
    layout: KvLayout,
    buffers: Sequence[BufferSpec],
    sequences: int,
    max_len: int,
    chunk: int,
) -> int:
    """The bytes of the state tensors of a cache for these sizes (nothing is allocated)."""
    shapes = group_shapes(layout, sequences, max_len, chunk)
    groups = _group_of(layout)
    total = 0
    for spec in buffers:
        group = groups[spec.name]
        shape = _buffer_shape(spec, group, shapes[group].blocks)
        element = torch.empty((), dtype=DTYPES[spec.dtype]).element_size()
        count = 1
        for d in shape:
            count *= d
        total += count * element
    return total


class PagedKVCache:
    """The state tensors of every layer, one allocator per group, and the blocks each of
    ``sequences`` sequences (numbered from 0) holds. ``buffers`` are the decode program's
    state buffer specs (their dtypes and shapes); ``chunk`` bounds the tokens a call appends
    (it sizes the sliding layers' rings)."""

    def __init__(
        self,
        layout: KvLayout,
        buffers: Sequence[BufferSpec],
        *,
        sequences: int,
        max_len: int,
        chunk: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.layout = layout
        self.max_len = max_len
        self.chunk = chunk
        self.shapes = group_shapes(layout, sequences, max_len, chunk)
        groups = _group_of(layout)
        missing = sorted(set(groups) - {b.name for b in buffers})
        if missing:
            raise RuntimeInputError(f"the program has no state buffers {', '.join(missing)}")
        self.tensors: dict[str, torch.Tensor] = {}
        for spec in buffers:
            group = groups.get(spec.name)
            if group is None:
                raise RuntimeInputError(f"state '{spec.name}' belongs to no KV cache layer")
            shape = _buffer_shape(spec, group, self.shapes[group].blocks)
            # Zeroed: a key never written is never read, but zeros keep a bug finite.
            self.tensors[spec.name] = torch.zeros(shape, dtype=DTYPES[spec.dtype], device=device)
        self.allocators = {name: BlockAllocator(s.blocks) for name, s in self.shapes.items()}
        self._blocks: list[dict[str, list[int]]] = [
            {name: [] for name in self.shapes} for _ in range(sequences)
        ]
        self._lengths = [0] * sequences

    @property
    def sequences(self) -> int:
        return len(self._blocks)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def length(self, sequence: int) -> int:
        """The tokens ``sequence`` has reserved room for."""
        return self._lengths[sequence]

    def blocks(self, sequence: int, group: str) -> list[int]:
        """The blocks ``sequence`` holds in ``group``, in table order."""
        return list(self._blocks[sequence][group])

    def reserve(self, sequence: int, length: int) -> None:
        """Makes room for tokens [0, ``length``) of ``sequence``: global groups get a block per
        BS tokens, rings a block per BS tokens up to their width."""
        if length > self.max_len:
            raise RuntimeInputError(
                f"sequence {sequence} would hold {length} tokens; the cache was sized for "
                f"{self.max_len}"
            )
        needed = -(-length // self.layout.block_size)
        for name, shape in self.shapes.items():
            held = self._blocks[sequence][name]
            while len(held) < min(needed, shape.width):
                held.append(self.allocators[name].allocate())
        self._lengths[sequence] = max(self._lengths[sequence], length)

    def release(self, sequence: int) -> None:
        """Gives ``sequence``'s blocks back to their pools."""
        for name, held in self._blocks[sequence].items():
            self.allocators[name].free(held)
            held.clear()
        self._lengths[sequence] = 0

    def block_tables(self, sequences: Sequence[int]) -> dict[str, torch.Tensor]:
        """Each group's block table [len(sequences), width] (int32), named as the compiled
        programs' inputs. Columns a sequence has not reached yet hold block 0: the code reads
        only the blocks of tokens already written."""
        tables = {}
        for name, shape in self.shapes.items():
            table = torch.zeros((len(sequences), shape.width), dtype=torch.int32)
            for row, sequence in enumerate(sequences):
                held = self._blocks[sequence][name]
                if held:
                    table[row, : len(held)] = torch.tensor(held, dtype=torch.int32)
            tables[table_input(name)] = table
        return tables

    def state(self) -> Mapping[str, torch.Tensor]:
        return self.tensors
