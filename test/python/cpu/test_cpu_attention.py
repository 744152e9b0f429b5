"""tessera.attention.flash on the CPU against a float64 softmax: MHA/GQA/MQA, causal, sliding
window, softcap, S ≠ T, odd sizes and tiles, dynamic batch and lengths, threads; and the
lowering's buffers are tile-sized, never S × T."""

from __future__ import annotations

import math
import re

import pytest
import seeds
import torch
from test_cpu_support import (
    check_close,
    force_threads,
    lowered,
    randn,
    run,
)


def attention_source(
    hq: int,
    hkv: int,
    d: int,
    dv: int,
    dtype: str,
    causal: bool,
    scale: float,
    softcap: float | None = None,
    window: int | None = None,
    tile: tuple[int, int, int] | None = None,
) -> str:
    attrs = [f"causal = {str(causal).lower()}", f"scale = {scale!r} : f32"]
    if softcap is not None:
        attrs.append(f"softcap = {softcap!r} : f32")
    if window is not None:
        attrs.append(f"window = {window} : i64")
    if tile is not None:
        attrs.append(f"tile = array<i64: {tile[0]}, {tile[1]}, {tile[2]}>")
    q = f"tensor<?x{hq}x?x{d}x{dtype}>"
    k = f"tensor<?x{hkv}x?x{d}x{dtype}>"
    v = f"tensor<?x{hkv}x?x{dv}x{dtype}>"
    o = f"tensor<?x{hq}x?x{dv}x{dtype}>"
    return f"""
func.func @forward(%q: {q}, %k: {k}, %v: {v}) -> {o} {{
  %o = "tessera.attention.flash"(%q, %k, %v) {{{", ".join(attrs)}}} : ({q}, {k}, {v}) -> {o}
  return %o : {o}
}}"""


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: float,
    softcap: float | None,
    window: int | None,
) -> torch.Tensor:
    """The op's definition in float64; a query that sees no key gives zeros."""
    group = q.shape[1] // k.shape[1]
    kd = k.double().repeat_interleave(group, dim=1)
    vd = v.double().repeat_interleave(group, dim=1)
    s = q.double() @ kd.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    queries, keys = q.shape[2], k.shape[2]
    i = torch.arange(queries)[:, None] + (keys - queries)
    j = torch.arange(keys)[None, :]
    visible = torch.ones(queries, keys, dtype=torch.bool)
    if causal:
        visible = j <= i
        if window is not None:
            visible &= (i - j) < window
    s = s.masked_fill(~visible, -math.inf)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ vd


CASES = [
    # (B, Hq, Hkv, S, T, D, Dv, causal, softcap, window, tile)
    (2, 4, 4, 37, 37, 16, 16, True, None, None, None),  # MHA causal, one partial tile
    (1, 4, 2, 70, 70, 32, 32, False, None, None, None),  # GQA, full attention
    (2, 6, 1, 45, 80, 24, 20, True, None, None, (16, 8, 16)),  # MQA, S < T, D ≠ Dv
    (3, 2, 2, 90, 100, 16, 16, True, None, 7, (16, 16, 16)),  # sliding window
    (2, 4, 2, 33, 33, 24, 24, True, 50.0, 5, (8, 8, 16)),  # softcap + window (Gemma 2)
    (1, 3, 1, 1, 57, 64, 64, True, None, None, None),  # decode: one query
    (2, 2, 1, 19, 31, 8, 8, False, 20.0, None, (5, 3, 16)),  # odd tiles, S ≠ T
    (1, 8, 2, 130, 130, 256, 256, True, None, 64, None),  # Gemma-like head dim
]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:8])))
def test_attention_matches_float64(case: tuple, dtype: str) -> None:
    generator = seeds.generator()
    b, hq, hkv, s, t, d, dv, causal, softcap, window, tile = case
    scale = 1.0 / math.sqrt(d)
    source = attention_source(hq, hkv, d, dv, dtype, causal, scale, softcap, window, tile)
    q = randn((b, hq, s, d), dtype, generator)
    k = randn((b, hkv, t, d), dtype, generator)
    v = randn((b, hkv, t, dv), dtype, generator)
    out = run(source, [q, k, v])
    check_close(
        out,
        reference(q, k, v, causal, scale, softcap, window),
        dtype,
        str(case),
        reduction=d + t,
    )


def test_dynamic_sizes_reuse_one_compiled_function() -> None:
    generator = seeds.generator()
    """B, S and T are dynamic: one lowering serves several shapes."""
    from tessera.lowering.cpu.jit import run_function

    source = attention_source(4, 2, 16, 16, "f32", True, 0.25, window=9, tile=(8, 8, 16))
    original, module, _ = lowered(source)
    for b, s, t in [(1, 5, 5), (3, 17, 40), (2, 1, 9)]:
        q = randn((b, 4, s, 16), "f32", generator)
        k = randn((b, 2, t, 16), "f32", generator)
        v = randn((b, 2, t, 16), "f32", generator)
        out = run_function(original, "forward", [q, k, v], module)
        check_close(
            out, reference(q, k, v, True, 0.25, None, 9), "f32", f"{(b, s, t)}", reduction=16 + t
        )


def test_queries_that_see_no_key_get_zeros() -> None:
    generator = seeds.generator()
    """Causal with more queries than keys: the first S - T queries see nothing."""
    source = attention_source(2, 2, 16, 16, "bf16", True, 0.25, tile=(4, 4, 16))
    q = randn((1, 2, 12, 16), "bf16", generator)
    k = randn((1, 2, 5, 16), "bf16", generator)
    v = randn((1, 2, 5, 16), "bf16", generator)
    out = run(source, [q, k, v])
    assert not out.isnan().any()
    assert (out[:, :, :7] == 0).all()
    check_close(out, reference(q, k, v, True, 0.25, None, None), "bf16", reduction=16 + 5)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_threaded_split_over_heads_matches(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    force_threads(monkeypatch)
    generator = seeds.generator()
    source = attention_source(6, 2, 32, 32, dtype, True, 0.2, softcap=30.0, tile=(16, 16, 16))
    q = randn((3, 6, 40, 32), dtype, generator)
    k = randn((3, 2, 40, 32), dtype, generator)
    v = randn((3, 2, 40, 32), dtype, generator)
    out = run(source, [q, k, v], threads=3)
    check_close(out, reference(q, k, v, True, 0.2, 30.0, None), dtype, reduction=32 + 40)


_ALLOC = re.compile(r"memref\.alloca?\(([^)]*)\)[^:]*: memref<([^>]*)>")


def test_no_buffer_grows_with_s_times_t() -> None:
    """Every buffer the lowering allocates is either the output or tile-sized and static."""
    hq, d, dv, tile = 8, 64, 48, (32, 16, 16)
    source = attention_source(hq, 2, d, dv, "bf16", True, 0.125, tile=tile)
    _, _, stages = lowered(source)
    found = _ALLOC.findall(stages["linalg"])
    assert found, "the lowering allocates nothing, not even its output"
    tile_elements = tile[0] * max(tile[1], dv)
    for sizes, type_ in found:
        dims = type_.split("x")[:-1]
        if "?" in dims:
            # The only buffer with a dynamic size is the result [B, Hq, S, Dv].
            assert dims == ["?", str(hq), "?", str(dv)], f"dynamic buffer memref<{type_}>"
            continue
        assert not sizes.strip(), f"static buffer with size operands: {sizes}"
        elements = math.prod(int(x) for x in dims)
        assert elements <= tile_elements, f"memref<{type_}> is larger than a tile"
