"""The fused attention prologue (``kernels/rope_append.py``: q/k norm, rope, cache append in one
launch) run without a GPU in the kernel-IR interpreter, against the separate kernels it
replaces (RMSNorm, RoPE and ``kv_append``) run on the same inputs: q's rotated rows and both
caches, poisoned first, must be equal bit for bit (untouched cache slots still poisoned)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from gpu_interpreter import Buffer, run_kernel
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.kv_append import KvAppendConfig, build_kv_append
from tessera.lowering.cuda.kernels.rms_norm import PreNorm, RmsNormConfig, build_rms_norm
from tessera.lowering.cuda.kernels.rope import RopeConfig, build_rope
from tessera.lowering.cuda.kernels.rope_append import (
    RopeAppendConfig,
    build_rope_append,
    rope_append_problem,
)

TORCH = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
BLOCK_SIZE = 4


class Case(NamedTuple):
    """dtype, head dim, (q heads, kv heads), tokens per sequence, q/k norms, table width."""

    dtype: str
    head_dim: int
    heads: tuple[int, int]
    seq: int
    norms: bool
    width: int = 3


CASES = [
    Case("bf16", 256, (8, 1), 1, False),  # Gemma-2B's decode step
    Case("bf16", 256, (4, 1), 1, True),  # Gemma 3 1B's, with its q/k norm
    Case("f16", 64, (4, 2), 3, True),  # two lanes a row: 16 rows share a block
    Case("f32", 128, (2, 2), 2, False),
    Case("f32", 1024, (1, 1), 1, True),  # a row over two warps: the block-wide sum
    Case("bf16", 256, (2, 1), 7, False, 1),  # a ring of 4 slots: the call's last 4 tokens stay
    Case("bf16", 24, (3, 1), 2, False),  # halves of 12: 4-element vectors, a lane a row
    Case("f32", 40, (2, 2), 1, False),  # halves of 20: five 4-element vectors, a lane a row
]


def _randn(shape: tuple[int, ...], dtype: str, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(TORCH[dtype])


def _run(build: Callable[[KernelModule], KernelInfo], bindings: dict[str, Any]) -> None:
    """Builds one kernel into a module of its own (inside the test's context) and runs it."""
    km = KernelModule("sm_90a")
    info = build(km)
    km.module.operation.verify()
    run_kernel(km.module, info, bindings)


class Inputs(NamedTuple):
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_w: torch.Tensor
    k_w: torch.Tensor
    pos: torch.Tensor
    table: torch.Tensor
    cache_index: torch.Tensor


def _inputs(case: Case, batch: int) -> Inputs:
    generator = torch.Generator().manual_seed(case.head_dim * 31 + case.seq)
    hq, hkv = case.heads
    shape = (batch, case.seq)
    blocks = batch * case.width + 2
    table = torch.randperm(blocks, generator=generator)[: batch * case.width]
    return Inputs(
        q=_randn((*shape, hq, case.head_dim), case.dtype, generator),
        k=_randn((*shape, hkv, case.head_dim), case.dtype, generator),
        # v as the projection writes it and the append reads it: [B, S, Hkv, D]
        v=_randn((*shape, hkv, case.head_dim), case.dtype, generator),
        q_w=_randn((case.head_dim,), case.dtype, generator) * 0.1,
        k_w=_randn((case.head_dim,), case.dtype, generator) * 0.1,
        pos=torch.randint(0, 4096, shape, generator=generator),
        table=table.reshape(batch, case.width).to(torch.int32),
        cache_index=torch.tensor([5, 0][:batch], dtype=torch.int64),
    )


def _caches(case: Case, batch: int) -> tuple[Buffer, Buffer]:
    elements = (batch * case.width + 2) * case.heads[1] * BLOCK_SIZE * case.head_dim
    return Buffer.poisoned(elements, case.dtype), Buffer.poisoned(elements, case.dtype)


def _norm(case: Case) -> PreNorm | None:
    return PreNorm(eps=1e-6, offset=1.0, w_dtype=case.dtype) if case.norms else None


def _separate(case: Case, x: Inputs) -> tuple[torch.Tensor, Buffer, Buffer]:
    """Norms (in place), ropes (in place) and the append as separate launches."""
    dtype, dim = case.dtype, case.head_dim
    batch, seq = x.q.shape[:2]
    q, k = Buffer.of(x.q.flatten(), dtype), Buffer.of(x.k.flatten(), dtype)
    if case.norms:
        norm = RmsNormConfig(dtype, dim, 1e-6)
        for rows, weight in ((q, x.q_w), (k, x.k_w)):
            count = rows.size // dim
            bindings = {"x": rows, "w": Buffer.of(weight, dtype), "y": rows, "rows": count}
            _run(lambda km: build_rms_norm(km, norm), bindings)
    for rows, heads in ((q, case.heads[0]), (k, case.heads[1])):
        rope = RopeConfig(dtype, heads, dim, 10000.0)
        bindings = {"x": rows, "pos": Buffer.of(x.pos, "i64"), "y": rows, "B": batch, "S": seq}
        _run(lambda km, rope=rope: build_rope(km, rope), bindings)
    append = KvAppendConfig(dtype, case.heads[1], dim, dim, BLOCK_SIZE, "i32")
    k_cache, v_cache = _caches(case, batch)
    hkv = case.heads[1]
    strides = {"sb": seq * hkv * dim, "sh": dim, "ss": hkv * dim}
    _run(
        lambda km: build_kv_append(km, append),
        {
            "k": k,
            "v": Buffer.of(x.v.flatten(), dtype),
            "k_cache": k_cache,
            "v_cache": v_cache,
            "block_table": Buffer.of(x.table.flatten(), "i32"),
            "cache_index": Buffer.of(x.cache_index, "i64"),
            **{f"{part}_{s}": value for part in ("k", "v") for s, value in strides.items()},
            "B": batch,
            "S": seq,
            "M": case.width,
        },
    )
    return q.tensor(tuple(x.q.shape)), k_cache, v_cache


def _fused(case: Case, x: Inputs) -> tuple[torch.Tensor, Buffer, Buffer]:
    dtype, dim = case.dtype, case.head_dim
    batch, seq = x.q.shape[:2]
    cfg = RopeAppendConfig(
        rope=RopeConfig(dtype, case.heads[0], dim, 10000.0),
        heads_kv=case.heads[1],
        block_size=BLOCK_SIZE,
        table_dtype="i32",
        q_norm=_norm(case),
        k_norm=_norm(case),
    )
    q = Buffer.of(x.q.flatten(), dtype)  # rotated in place, as the planned program does
    k_cache, v_cache = _caches(case, batch)
    hkv = case.heads[1]
    norms = {"q_norm_w": Buffer.of(x.q_w, dtype), "k_norm_w": Buffer.of(x.k_w, dtype)}
    _run(
        lambda km: build_rope_append(km, cfg),
        {
            "q": q,
            "k": Buffer.of(x.k.flatten(), dtype),
            "v": Buffer.of(x.v.flatten(), dtype),
            **(norms if case.norms else {}),
            "pos": Buffer.of(x.pos, "i64"),
            "q_out": q,
            "k_cache": k_cache,
            "v_cache": v_cache,
            "block_table": Buffer.of(x.table.flatten(), "i32"),
            "cache_index": Buffer.of(x.cache_index, "i64"),
            "v_sb": seq * hkv * dim,
            "v_sh": dim,
            "v_ss": hkv * dim,
            "B": batch,
            "S": seq,
            "M": case.width,
        },
    )
    return q.tensor(tuple(x.q.shape)), k_cache, v_cache


def _bits(memory: Buffer) -> torch.Tensor:
    """A buffer's bytes as stored (poison included), for an exact comparison."""
    return torch.from_numpy(memory.typed().copy().view(np.uint8))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_fused_prologue_equals_the_separate_kernels(case: Case) -> None:
    inputs = _inputs(case, batch=2)
    with make_context(), ir.Location.unknown():
        q_ref, k_ref, v_ref = _separate(case, inputs)
        q_out, k_cache, v_cache = _fused(case, inputs)
    assert torch.equal(q_out.view(torch.int8), q_ref.view(torch.int8))
    assert torch.equal(_bits(k_cache), _bits(k_ref))
    assert torch.equal(_bits(v_cache), _bits(v_ref))
    # every token kept by the ring was written (not all of the cache is still poison)
    assert not torch.equal(_bits(k_cache), _bits(_caches(case, 2)[0]))


def test_what_the_fused_kernel_refuses() -> None:
    assert rope_append_problem("bf16", 256, 256, True) is None
    assert "whole heads" in str(rope_append_problem("bf16", 256, 128, False))
    assert "bf16/f16/f32" in str(rope_append_problem("i32", 256, 256, False))
    # head dim 24 in bf16: RMSNorm's 8-element vectors straddle the halves (12 each), so a
    # normed head has no layout; without a norm, 4-element vectors keep to their half
    assert "whole rounds" in str(rope_append_problem("bf16", 24, 24, True))
    assert rope_append_problem("bf16", 24, 24, False) is None
    cfg = RopeAppendConfig(RopeConfig("bf16", 2, 64, 10000.0, rotary_dim=32), 1, 4)
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        with pytest.raises(ValueError, match="whole heads"):
            build_rope_append(km, cfg)
