"""The paged KV cache: the allocator reuses freed blocks, sequences grow block by block, sliding
groups keep a ring of the width their window needs, block tables list what each sequence
holds, and a Gemma 3 model's cache is a fraction of a full one."""

from __future__ import annotations

import pytest
import torch
from test_generate_support import compiled

from tessera import RuntimeInputError
from tessera.runtime.kv_cache import BlockAllocator, PagedKVCache, cache_bytes, group_shapes
from tessera.runtime.kv_layout import CacheGroup, CacheLayer, KvLayout, blocks_symbol, state_name
from tessera.runtime.manifest import BufferSpec


def layout_of(windows: list[int | None], block_size: int = 4) -> KvLayout:
    """One layer per entry of ``windows`` (None: global), groups by window."""
    sliding = {w for w in windows if w is not None}
    groups = {}
    layers = []
    for layer, window in enumerate(windows):
        name = "global" if window is None else ("sliding" if len(sliding) == 1 else f"s{window}")
        groups[name] = CacheGroup(name, window)
        layers.append(CacheLayer(layer, name, state_name(layer, "k"), state_name(layer, "v")))
    return KvLayout(block_size, tuple(groups.values()), tuple(layers))


def buffers_of(layout: KvLayout, heads: int, depth: int, dtype: str = "f32") -> list[BufferSpec]:
    return [
        BufferSpec(
            name, "state", dtype, (blocks_symbol(layer.group), heads, layout.block_size, depth)
        )
        for layer in layout.layers
        for name in (layer.k, layer.v)
    ]


def test_the_allocator_reuses_freed_blocks_first() -> None:
    pool = BlockAllocator(6)
    first = [pool.allocate() for _ in range(4)]
    assert first == [0, 1, 2, 3]
    pool.free([1, 3])
    assert pool.free_blocks == 4
    # The most recently freed block comes back first, before the never-used 4 and 5.
    assert [pool.allocate(), pool.allocate()] == [3, 1]
    assert [pool.allocate(), pool.allocate()] == [4, 5]
    with pytest.raises(RuntimeInputError, match="pool of 6 blocks is exhausted"):
        pool.allocate()
    with pytest.raises(RuntimeInputError, match="block 9 is not allocated"):
        pool.free([9])
    pool.free([0])
    with pytest.raises(RuntimeInputError, match="block 0 is not allocated"):
        pool.free([0])


def test_rings_are_as_wide_as_their_window_and_a_call_need() -> None:
    layout = layout_of([6, None, 6], block_size=4)
    shapes = group_shapes(layout, sequences=3, max_len=100, chunk=8)
    # Window 6 and 8 new tokens: 13 tokens, 4 blocks of 4; global: 25 blocks.
    assert shapes["sliding"].width == 4 and shapes["sliding"].blocks == 12
    assert shapes["global"].width == 25 and shapes["global"].blocks == 75
    # A ring never needs to be wider than the sequence.
    assert group_shapes(layout, 1, 9, 8)["sliding"].width == 3


def test_sequences_grow_by_blocks_and_give_them_back() -> None:
    layout = layout_of([5, None], block_size=4)
    cache = PagedKVCache(layout, buffers_of(layout, 2, 8), sequences=2, max_len=40, chunk=4)
    ring = cache.shapes["sliding"].width
    assert ring == 2
    cache.reserve(0, 3)
    cache.reserve(1, 9)
    assert len(cache.blocks(0, "global")) == 1 and len(cache.blocks(1, "global")) == 3
    # The ring stops growing at its width; the global group keeps growing.
    cache.reserve(1, 30)
    assert len(cache.blocks(1, "sliding")) == ring
    assert len(cache.blocks(1, "global")) == 8
    tables = cache.block_tables([1, 0])
    assert tables["block_table.global"].dtype == torch.int32
    assert tables["block_table.global"].shape == (2, 10)
    assert tables["block_table.global"][0, :8].tolist() == cache.blocks(1, "global")
    assert tables["block_table.sliding"][1, :1].tolist() == cache.blocks(0, "sliding")
    held = cache.blocks(1, "global")
    cache.release(1)
    assert cache.blocks(1, "global") == []
    # Sequence 0 grows into the blocks sequence 1 gave back.
    cache.reserve(0, 12)
    assert set(cache.blocks(0, "global")[1:]) <= set(held)
    with pytest.raises(RuntimeInputError, match="sized for 40"):
        cache.reserve(0, 41)


def test_the_state_tensors_have_the_programs_shapes() -> None:
    layout = layout_of([3, None, None], block_size=4)
    buffers = buffers_of(layout, 2, 8, "bf16")
    cache = PagedKVCache(layout, buffers, sequences=3, max_len=20, chunk=4)
    state = cache.state()
    assert set(state) == {b.name for b in buffers}
    assert state["kv.0.k"].shape == (3 * 2, 2, 4, 8)
    assert state["kv.1.v"].shape == (3 * 5, 2, 4, 8)
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert cache.memory_bytes() == cache_bytes(layout, buffers, 3, 20, 4)


def full_cache_bytes(layers: int, batch: int, max_len: int, heads: int, depth: int) -> int:
    """Every layer holding every token (block-rounded), keys and values, f32."""
    blocks = -(-max_len // 16)
    return layers * batch * blocks * 16 * heads * 2 * depth * 4


def test_a_gemma3_cache_is_a_fraction_of_a_full_one() -> None:
    model, cm = compiled("gemma3-gqa")
    config = model.config
    batch, max_len = 2, 1024
    full = full_cache_bytes(
        config.num_hidden_layers, batch, max_len, config.num_key_value_heads, config.head_dim
    )
    # Two sliding layers (window 5): rings of ⌈(5 + 16 - 1) / 16⌉ = 2 blocks for prefill
    # chunks of 16 tokens; one global layer: every block.
    per_block = 16 * config.num_key_value_heads * 2 * config.head_dim * 4
    expected = batch * per_block * (2 * 2 + 1 * (max_len // 16))
    assert cm.cache_memory(batch, max_len) == expected
    assert expected < 0.4 * full


def test_a_gemma3_1b_shaped_cache_is_under_a_fifth_of_a_full_one() -> None:
    # Gemma 3 1B: 26 layers, every sixth global, windows of 512, one kv head of 256.
    windows: list[int | None] = [None if (i + 1) % 6 == 0 else 512 for i in range(26)]
    layout = layout_of(windows, block_size=16)
    buffers = buffers_of(layout, 1, 256, "bf16")
    memory = cache_bytes(layout, buffers, sequences=1, max_len=32768, chunk=512)
    full = 26 * 32768 * 256 * 2 * 2
    assert memory / full < 0.2
