"""tessera.kv.append and tessera.attention.paged on the CPU, against a float64 reference over the
logical (unpaged) sequences: calls of several lengths append into caches through shuffled block
tables, rings narrower than the sequence wrap, left padding hides leading keys, GQA/MQA,
sliding windows, softcaps, odd head dims, f32 and bf16, threads; and out-of-range tables
stay inside the cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import seeds
import torch
from test_cpu_support import TORCH_DTYPES, force_threads, lowered, randn, relative_error, tolerance

from tessera.lowering.cpu.jit import JitFunction

INDEX_DTYPES = {"i32": torch.int32, "i64": torch.int64}


@dataclass(frozen=True)
class Case:
    q_heads: int
    kv_heads: int
    depth: int
    value_depth: int
    block_size: int
    dtype: str
    scale: float
    softcap: float | None = None
    window: int | None = None
    table_dtype: str = "i32"


def source(case: Case) -> str:
    """A function that appends new keys and values, then attends over the cache."""
    dtype = case.dtype
    kc = f"memref<?x{case.kv_heads}x{case.block_size}x{case.depth}x{dtype}>"
    vc = f"memref<?x{case.kv_heads}x{case.block_size}x{case.value_depth}x{dtype}>"
    q = f"tensor<?x{case.q_heads}x?x{case.depth}x{dtype}>"
    k = f"tensor<?x{case.kv_heads}x?x{case.depth}x{dtype}>"
    v = f"tensor<?x{case.kv_heads}x?x{case.value_depth}x{dtype}>"
    o = f"tensor<?x{case.q_heads}x?x{case.value_depth}x{dtype}>"
    table = f"tensor<?x?x{case.table_dtype}>"
    index = "tensor<?xi64>"
    attrs = [f"scale = {case.scale!r} : f32"]
    if case.softcap is not None:
        attrs.append(f"softcap = {case.softcap!r} : f32")
    if case.window is not None:
        attrs.append(f"window = {case.window} : i64")
    return f"""
func.func @forward(%kc: {kc}, %vc: {vc}, %q: {q}, %k: {k}, %v: {v}, %table: {table},
                   %index: {index}, %start: {index}) -> {o} {{
  "tessera.kv.append"(%kc, %vc, %k, %v, %table, %index)
      : ({kc}, {vc}, {k}, {v}, {table}, {index}) -> ()
  %o = "tessera.attention.paged"(%q, %kc, %vc, %table, %index, %start) {{{", ".join(attrs)}}}
      : ({q}, {kc}, {vc}, {table}, {index}, {index}) -> {o}
  return %o : {o}
}}"""


def reference(
    case: Case,
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    first: torch.Tensor,
    start: torch.Tensor,
) -> torch.Tensor:
    """Attention of q [B, Hq, S, D] (query s of row b at index first[b] + s) over the logical
    keys and values [B, Hkv, T, D] written so far, in float64."""
    batch, heads, length, _ = q.shape
    group = case.q_heads // case.kv_heads
    out = torch.zeros(batch, heads, length, case.value_depth, dtype=torch.float64)
    for b in range(batch):
        for s in range(length):
            i = int(first[b]) + s
            low = max(int(start[b]), 0)
            if case.window is not None:
                low = max(low, i - case.window + 1)
            if low > i:
                continue
            for h in range(heads):
                key = keys[b, h // group, low : i + 1].double()
                scores = key @ q[b, h, s].double() * case.scale
                if case.softcap is not None:
                    scores = case.softcap * torch.tanh(scores / case.softcap)
                weights = torch.softmax(scores, dim=0)
                out[b, h, s] = weights @ values[b, h // group, low : i + 1].double()
    return out


def run_calls(
    case: Case,
    chunks: list[int],
    width: int,
    starts: list[int],
    threads: int = 0,
) -> None:
    """Appends ``chunks`` tokens per call to every row (tables ``width`` blocks wide, ``starts``
    padding tokens before each row's first valid key) and checks each call's attention and
    the cache slots."""
    generator = seeds.generator()
    original, module, _ = lowered(source(case), threads)
    kernel = JitFunction(original, "forward", module)
    batch = len(starts)
    total = sum(chunks)
    blocks = batch * width + 3
    dtype = TORCH_DTYPES[case.dtype]
    # Poisoned caches: a slot read before it was written would turn the output into NaN.
    kc = torch.full((blocks, case.kv_heads, case.block_size, case.depth), math.nan, dtype=dtype)
    vc = torch.full(
        (blocks, case.kv_heads, case.block_size, case.value_depth), math.nan, dtype=dtype
    )
    order = torch.randperm(blocks, generator=generator)[: batch * width]
    table = order.reshape(batch, width).to(INDEX_DTYPES[case.table_dtype])
    keys = randn((batch, case.kv_heads, total, case.depth), case.dtype, generator)
    values = randn((batch, case.kv_heads, total, case.value_depth), case.dtype, generator)
    # Rows at different places in their sequences: row b's first call starts at offset[b]
    # and its keys before offset[b] + starts[b] are padding.
    offset = torch.arange(batch, dtype=torch.int64) * 2
    start = offset + torch.tensor(starts, dtype=torch.int64)
    all_keys = torch.zeros(batch, case.kv_heads, int(offset.max()) + total, case.depth, dtype=dtype)
    all_values = torch.zeros(
        batch, case.kv_heads, int(offset.max()) + total, case.value_depth, dtype=dtype
    )
    done = 0
    for count in chunks:
        first = offset + done
        k = keys[:, :, done : done + count]
        v = values[:, :, done : done + count]
        for b in range(batch):
            at = int(first[b])
            all_keys[b, :, at : at + count] = k[b]
            all_values[b, :, at : at + count] = v[b]
        q = randn((batch, case.q_heads, count, case.depth), case.dtype, generator)
        out = kernel([kc, vc, q, k, v, table, first, start])
        expected = reference(case, q, all_keys, all_values, first, start)
        bound = tolerance(case.dtype, case.depth + total)
        error = relative_error(out, expected)
        assert not out.isnan().any(), f"call of {count} tokens at {done}: NaN (an unwritten slot)"
        assert error <= bound, f"call of {count} at {done}: error {error:.2e} > {bound:.2e}"
        done += count
        # The cache holds each row's last width·BS tokens where the table says.
        for b in range(batch):
            end = int(first[b]) + count
            for t in range(max(int(offset[b]), end - width * case.block_size), end):
                block = int(table[b, (t // case.block_size) % width])
                slot = t % case.block_size
                assert torch.equal(kc[block, :, slot], all_keys[b, :, t]), (b, t)
                assert torch.equal(vc[block, :, slot], all_values[b, :, t]), (b, t)


CASES = [
    Case(4, 2, 16, 16, 4, "f32", 0.25),
    Case(3, 1, 20, 12, 8, "f32", 0.2, softcap=30.0),
    Case(2, 2, 32, 32, 16, "bf16", 1 / math.sqrt(32), softcap=50.0),
    Case(4, 1, 24, 24, 4, "bf16", 0.3, table_dtype="i64"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.dtype}-h{c.q_heads}x{c.kv_heads}")
def test_global_layers_keep_every_token(case: Case) -> None:
    # Prefill, then decode steps, then another chunk; tables cover the whole sequence.
    chunks = [7, 1, 1, 5, 1, 1]
    width = -(-(sum(chunks) + 2 * 2) // case.block_size)
    run_calls(case, chunks, width, starts=[0, 3, 1])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.dtype}-h{c.q_heads}x{c.kv_heads}")
def test_sliding_layers_keep_a_ring_that_wraps(case: Case) -> None:
    window, chunk = 5, 3
    sliding = Case(**{**case.__dict__, "window": window})
    # The smallest ring that holds the window and a call's tokens: it wraps many times.
    width = -(-(window + chunk - 1) // case.block_size)
    chunks = [chunk, chunk]
    while sum(chunks) <= 2 * width * case.block_size:
        chunks += [1, 1, 2, 1, chunk, 1]
    run_calls(sliding, chunks, width, starts=[0, 2, 0])


def test_threads_split_the_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    force_threads(monkeypatch)
    run_calls(Case(6, 2, 16, 16, 4, "f32", 0.25, window=6), [9, 1, 1], 4, [0, 1], threads=3)


def test_a_query_that_sees_no_key_gets_zeros() -> None:
    case = Case(2, 1, 16, 16, 4, "f32", 0.25)
    original, module, _ = lowered(source(case))
    kernel = JitFunction(original, "forward", module)
    generator = seeds.generator()
    kc = torch.zeros(4, 1, 4, 16)
    vc = torch.zeros(4, 1, 4, 16)
    q = randn((2, 2, 3, 16), "f32", generator)
    k = randn((2, 1, 3, 16), "f32", generator)
    table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    first = torch.tensor([0, 0])
    # Row 1's keys all lie before its first valid key.
    start = torch.tensor([0, 7])
    out = kernel([kc, vc, q, k, k, table, first, start])
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert out[0].abs().sum() > 0


def test_out_of_range_block_ids_stay_inside_the_cache() -> None:
    """Compiled code trusts nothing that would take it out of its buffers: block ids are
    clamped into the cache and a negative cache index counts as 0."""
    case = Case(2, 1, 16, 16, 4, "f32", 0.25)
    original, module, _ = lowered(source(case))
    kernel = JitFunction(original, "forward", module)
    generator = seeds.generator()
    guard = 1234.0
    # The cache is the middle of a larger buffer: writes outside it would change the guards.
    storage = torch.full((6, 1, 4, 16), guard)
    kc = storage[1:5]
    vc = torch.zeros(4, 1, 4, 16)
    q = randn((2, 2, 5, 16), "f32", generator)
    k = randn((2, 1, 5, 16), "f32", generator)
    table = torch.tensor([[10**6, -5], [3, 2**31 - 1]], dtype=torch.int32)
    first = torch.tensor([-9, 1])
    out = kernel([kc, vc, q, k, k, table, first, torch.tensor([0, 0])])
    assert torch.isfinite(out).all()
    assert torch.equal(storage[0], torch.full_like(storage[0], guard))
    assert torch.equal(storage[5], torch.full_like(storage[5], guard))
