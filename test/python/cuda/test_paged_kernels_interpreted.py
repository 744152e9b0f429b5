"""The GPU kernels of generation (``tessera.kv.append`` and ``tessera.attention.paged``) run
without a GPU in the kernel-IR interpreter: keys and values are appended into poisoned caches
through shuffled block tables (so every slot read must have been written by an append), then
split-KV attention and its combine run over them and are compared with a float64 reference
computed from the logical, unpaged sequences."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from gpu_interpreter import Buffer, run_kernel
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cuda.kernel import KernelModule
from tessera.lowering.cuda.kernels.kv_append import KvAppendConfig, build_kv_append
from tessera.lowering.cuda.kernels.paged_attention import (
    PagedAttentionConfig,
    build_paged_attention,
    scratch_elements,
)
from tessera.runtime import expr

TORCH = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
# Unit roundoff of the output dtype: the kernel computes in f32 and rounds once, so the error
# against float64 is a few output roundings plus f32 accumulation over the keys and head dim.
UNIT = {"bf16": 2.0**-8, "f16": 2.0**-11, "f32": 2.0**-24}


def _bound(dtype: str, head_dim: int, keys: int) -> float:
    f32_terms = 2.0**-24 * (head_dim + keys) * 4
    return 4 * UNIT[dtype] + f32_terms


def _randn(shape: tuple[int, ...], dtype: str, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(TORCH[dtype])


def _tables(batch: int, width: int, blocks: int, generator: torch.Generator) -> torch.Tensor:
    """Distinct physical blocks for every (sequence, table entry), shuffled."""
    order = torch.randperm(blocks, generator=generator)[: batch * width]
    return order.reshape(batch, width).to(torch.int64)


def _append(
    km: KernelModule,
    cfg: KvAppendConfig,
    k: torch.Tensor,
    v: torch.Tensor,
    caches: tuple[Buffer, Buffer],
    table: torch.Tensor,
    cache_index: torch.Tensor,
) -> None:
    k, v = k.contiguous(), v.contiguous()
    batch, _heads, seq, _dim = k.shape
    info = build_kv_append(km, cfg)
    strides = {}
    for name, value in (("k", k), ("v", v)):
        sb, sh, ss, _ = value.stride()
        strides.update({f"{name}_sb": sb, f"{name}_sh": sh, f"{name}_ss": ss})
    run_kernel(
        km.module,
        info,
        {
            "k": Buffer.of(k.flatten(), cfg.dtype),
            "v": Buffer.of(v.flatten(), cfg.dtype),
            "k_cache": caches[0],
            "v_cache": caches[1],
            "block_table": Buffer.of(table.flatten(), "i64"),
            "cache_index": Buffer.of(cache_index, "i64"),
            **strides,
            "B": batch,
            "S": seq,
            "M": table.shape[1],
        },
    )


def _module() -> KernelModule:
    return KernelModule("sm_90a")


def _as_built(km: KernelModule) -> None:
    """NVIDIA kernels run as built."""


class PagedCase(NamedTuple):
    """One append-then-attend check: dtype, head dim, window, softcap, query tokens per
    sequence, how the partial kernel splits the keys (keys per split, warps, keys per warp
    step), (query heads, kv heads), tokens already cached per sequence, table width."""

    dtype: str
    head_dim: int
    window: int | None
    softcap: float | None
    seq: int
    layout: tuple[int, int, int]
    heads: tuple[int, int] = (4, 2)
    past: tuple[int, int] = (7, 2)
    width: int = 4
    pages_ahead: bool = False


# The cache holds 16 keys per sequence; the layouts give one warp per block (no merge),
# warps whose runs end inside a step or hold no visible key, steps longer than a run, and one
# split for all keys. Head dims 24 and 40 leave lanes idle (40: two-element vector loads), 64
# and 256 fill them.
CASES = [
    PagedCase("f32", 24, None, None, 1, (4, 1, 1)),
    PagedCase("bf16", 24, 5, 50.0, 1, (8, 4, 4)),
    PagedCase("bf16", 64, None, None, 3, (4, 2, 3)),
    PagedCase("f16", 40, 6, None, 2, (16, 4, 2)),
    PagedCase("bf16", 256, None, 50.0, 1, (8, 2, 4)),
]
# The same with each warp's block-table lookups a step ahead (the batch-1 layout).
CASES += [case._replace(pages_ahead=True) for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_append_then_paged_attention_matches_float64(case: PagedCase) -> None:
    check_append_then_paged_attention(_module, _as_built, case)


def check_append_then_paged_attention(
    module: Callable[[], KernelModule], finish: Callable[[KernelModule], None], case: PagedCase
) -> None:
    """Appends the past and a call's tokens into poisoned caches with the kernels ``module()``
    builds (``finish`` readies them, as the target's lowering would), then runs paged
    attention and its combine and compares with float64."""
    dtype, head_dim, window, softcap, seq, layout, heads, past, width, ahead = case
    generator = torch.Generator().manual_seed(1234 + head_dim + seq)
    heads_q, heads_kv = heads
    batch, block_size, blocks = 2, 4, 2 * width + 3
    past_tokens = torch.tensor(past)  # tokens already cached per sequence
    kv_start = torch.tensor([0, 1])  # sequence 1 has one token of left padding
    table = _tables(batch, width, blocks, generator)
    context = make_context()
    with context, ir.Location.unknown():
        km = module()
        append_cfg = KvAppendConfig(dtype, heads_kv, head_dim, head_dim, block_size)
        cfg = PagedAttentionConfig(
            dtype,
            head_dim,
            head_dim,
            heads_q,
            heads_kv,
            block_size,
            scale=head_dim**-0.5,
            softcap=softcap,
            window=window,
            keys_per_split=layout[0],
            warps=layout[1],
            keys_per_step=layout[2],
            pages_ahead=ahead,
        )
        partial, combine = build_paged_attention(km, cfg)
        build_kv_append(km, append_cfg)
        finish(km)
        km.module.operation.verify()

    total = int(past_tokens.max()) + seq
    keys = _randn((batch, heads_kv, total, head_dim), dtype, generator)
    values = _randn((batch, heads_kv, total, head_dim), dtype, generator)
    caches = (
        Buffer.poisoned(blocks * heads_kv * block_size * head_dim, dtype, "k_cache"),
        Buffer.poisoned(blocks * heads_kv * block_size * head_dim, dtype, "v_cache"),
    )
    # The past, one sequence at a time (each from its own first token), then this call's tokens.
    for b in range(batch):
        count = int(past_tokens[b])
        _append(
            km,
            append_cfg,
            keys[b : b + 1, :, :count],
            values[b : b + 1, :, :count],
            caches,
            table[b : b + 1],
            torch.tensor([0]),
        )
    new_k = torch.stack(
        [keys[b, :, int(past_tokens[b]) : int(past_tokens[b]) + seq] for b in range(batch)]
    )
    new_v = torch.stack(
        [values[b, :, int(past_tokens[b]) : int(past_tokens[b]) + seq] for b in range(batch)]
    )
    _append(km, append_cfg, new_k, new_v, caches, table, past_tokens)

    q = _randn((batch, heads_q, seq, head_dim), dtype, generator)
    scalars = {"B": batch, "S": seq, "M": width}
    part_o, part_ml = (expr.evaluate(e, scalars) for e in scratch_elements(cfg))
    parts = (Buffer.poisoned(part_o, "f32", "part_o"), Buffer.poisoned(part_ml, "f32", "part_ml"))
    out = Buffer.poisoned(q.numel(), dtype, "o")
    run_kernel(
        km.module,
        partial,
        {
            "q": Buffer.of(q.flatten(), dtype),
            "k_cache": caches[0],
            "v_cache": caches[1],
            "block_table": Buffer.of(table.flatten(), "i64"),
            "cache_index": Buffer.of(past_tokens, "i64"),
            "kv_start": Buffer.of(kv_start, "i64"),
            "part_o": parts[0],
            "part_ml": parts[1],
            "q_sb": heads_q * seq * head_dim,
            "q_sh": seq * head_dim,
            "q_ss": head_dim,
            **scalars,
        },
    )
    run_kernel(
        km.module,
        combine,
        {
            "part_o": parts[0],
            "part_ml": parts[1],
            "o": out,
            "o_sb": heads_q * seq * head_dim,
            "o_sh": seq * head_dim,
            "o_ss": head_dim,
            **scalars,
        },
    )
    got = out.tensor((batch, heads_q, seq, head_dim)).double()

    expected = torch.zeros_like(got)
    group = heads_q // heads_kv
    for b in range(batch):
        for h in range(heads_q):
            for s in range(seq):
                i = int(past_tokens[b]) + s
                first = (
                    int(kv_start[b]) if window is None else max(int(kv_start[b]), i - window + 1)
                )
                k = keys[b, h // group, first : i + 1].double()
                v = values[b, h // group, first : i + 1].double()
                scores = (k @ q[b, h, s].double()) * head_dim**-0.5
                if softcap is not None:
                    scores = softcap * torch.tanh(scores / softcap)
                expected[b, h, s] = torch.softmax(scores, 0) @ v
    error = ((got - expected).norm() / expected.norm()).item()
    assert error < _bound(dtype, head_dim, total), error


def test_a_ring_shorter_than_the_sequence() -> None:
    """A sliding layer's table: 4 blocks of 4 slots hold a window of 6 keys plus a call of 2
    tokens, while the sequences are 37 and 30 tokens long (each slot rewritten)."""
    case = PagedCase("bf16", 24, 6, None, 2, (4, 2, 2), past=(35, 28), pages_ahead=True)
    check_append_then_paged_attention(_module, _as_built, case)


def test_many_splits_take_the_combine_warps_several_rounds() -> None:
    """A split per key over 12 blocks of 4: 48 splits, so each of the combine's four warps
    weighs three rounds of four splits (the sequences' 42 and 32 keys end inside rounds)."""
    case = PagedCase("bf16", 40, None, 50.0, 1, (1, 1, 1), past=(41, 31), width=12)
    check_append_then_paged_attention(_module, _as_built, case)


def test_a_group_of_sixteen_heads_spreads_over_two_blocks() -> None:
    """16 query heads over one kv head: each block serves 8 (their queries and accumulators
    fill a lane's registers), the second block the second 8."""
    cfg = PagedAttentionConfig("bf16", 256, 256, 16, 1, 16, scale=1.0)
    assert (cfg.block_heads, cfg.head_blocks, cfg.step) == (8, 2, 2)
    assert PagedAttentionConfig("bf16", 256, 256, 12, 1, 16, scale=1.0).block_heads == 6
    case = PagedCase("f32", 24, None, None, 1, (4, 2, 2), heads=(16, 1))
    check_append_then_paged_attention(_module, _as_built, case)


def test_append_keeps_the_last_ring_of_a_long_call() -> None:
    """A call of 7 tokens into a ring of one 4-slot block: tokens 3..6 stay, each in slot
    t mod 4 (the interpreter also faults if two threads store one element)."""
    dtype, heads_kv, dim, block_size = "f32", 1, 8, 4
    generator = torch.Generator().manual_seed(7)
    keys = _randn((1, heads_kv, 7, dim), dtype, generator)
    values = _randn((1, heads_kv, 7, dim), dtype, generator)
    with make_context(), ir.Location.unknown():
        km = _module()
        cfg = KvAppendConfig(dtype, heads_kv, dim, dim, block_size)
        build_kv_append(km, cfg)
    blocks = 3
    k_cache = Buffer.of(torch.full((blocks * heads_kv * block_size * dim,), math.nan), dtype)
    v_cache = Buffer.of(torch.full((blocks * heads_kv * block_size * dim,), math.nan), dtype)
    table = torch.tensor([[2]])
    _append(km, cfg, keys, values, (k_cache, v_cache), table, torch.tensor([0]))
    cached = k_cache.tensor((blocks, heads_kv, block_size, dim))
    for t in range(3, 7):
        assert torch.equal(cached[2, 0, t % block_size], keys[0, 0, t])
    assert torch.isnan(cached[:2]).all()
    assert torch.equal(
        v_cache.tensor((blocks, heads_kv, block_size, dim))[2, 0, 3], values[0, 0, 3]
    )
