"""tessera.rope.apply on the CPU against transformers' rotary embedding computed by torch:
theta, linear scaling, partial rotary dims, odd sizes, int32/int64 positions, bf16 rounding."""

from __future__ import annotations

import pytest
import seeds
import torch
from test_cpu_support import (
    TORCH_DTYPES,
    assert_rare_flips,
    check_close,
    randn,
    run,
)


def rope_source(
    heads: int,
    head_dim: int,
    dtype: str,
    pos_dtype: str,
    theta: float,
    scaling: float,
    rotary_dim: int | None,
) -> str:
    x = f"tensor<?x?x{heads}x{head_dim}x{dtype}>"
    p = f"tensor<?x?x{pos_dtype}>"
    attrs = [f"theta = {theta!r} : f32", f"scaling = {scaling!r} : f32"]
    if rotary_dim is not None:
        attrs.append(f"rotary_dim = {rotary_dim} : i64")
    return f"""
func.func @forward(%x: {x}, %p: {p}) -> {x} {{
  %y = "tessera.rope.apply"(%x, %p) {{{", ".join(attrs)}}} : ({x}, {p}) -> {x}
  return %y : {x}
}}"""


def hf_rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float, scaling: float, rotary_dim: int
) -> torch.Tensor:
    """transformers' default rope with linear scaling, on [B, S, H, D], in x's dtype."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim)
    )
    inv_freq = inv_freq / scaling
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(x.dtype)[:, :, None], emb.sin().to(x.dtype)[:, :, None]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + rotated * sin, rest], dim=-1)


CASES = [
    # (B, S, H, D, theta, scaling, rotary_dim)
    (2, 7, 3, 24, 10000.0, 1.0, None),
    (1, 33, 4, 256, 10000.0, 1.0, None),
    (2, 5, 2, 32, 1000000.0, 8.0, None),  # Gemma 3 global layers
    (3, 4, 1, 40, 10000.0, 1.0, 24),  # partial rotary, odd remainder
    (1, 2, 5, 6, 500.0, 2.0, None),  # narrower than a vector
]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("pos_dtype", ["i64", "i32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_rope_matches_transformers(case: tuple, dtype: str, pos_dtype: str) -> None:
    generator = seeds.generator()
    b, s, h, d, theta, scaling, rotary = case
    x = randn((b, s, h, d), dtype, generator)
    positions = torch.randint(0, 8192, (b, s), generator=generator).to(
        torch.int64 if pos_dtype == "i64" else torch.int32
    )
    out = run(rope_source(h, d, dtype, pos_dtype, theta, scaling, rotary), [x, positions])
    expected = hf_rope(x, positions, theta, scaling, rotary or d)
    if dtype == "bf16":
        # Same roundings in the same order as torch: identical but for cos/sin ulps that a
        # bf16 rounding of cos or sin can amplify, rarely.
        assert_rare_flips(out, expected, 0.01)
    check_close(out, hf_rope(x.double(), positions, theta, scaling, rotary or d), dtype)
    assert out.dtype == TORCH_DTYPES[dtype]
