"""Gemma-like decoders written by hand, each in its own style, unlike transformers' modules.

They share Gemma's parts (RMSNorm with 1 + w, rotary embeddings, causal or sliding-window
attention, a gated GELU MLP, tied or untied heads) but build them the ways hand-written models
do: tables, masks and scales computed inside ``forward`` from ``arange``, ``pow``, ``triu``,
comparisons and sizes; attention through ``einsum``, ``baddbmm``, ``matmul`` or
``scaled_dot_product_attention``; grouped-query heads through ``expand`` or
``repeat_interleave``; GELU written out; buffers registered persistent or not.

``SPECS`` describes each model for the tests: how to build it and which fused ops its pattern
should become.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# -- parts shared by several styles --------------------------------------------------------------


class RMSNorm(nn.Module):
    """Gemma's norm: x · rsqrt(mean(x²) + eps) · (1 + w), computed in f32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).type_as(x)


class SquareNorm(nn.Module):
    """The same norm spelled with x·x, ``torch.mean`` and the offset added first."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = torch.mean(x * x, dim=-1, keepdim=True)
        gain = 1 + self.scale
        return x * torch.rsqrt(variance + self.eps) * gain


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class GatedMLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.gate(x)) * self.up(x))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


# -- Gemma 1: einsum attention, MQA through expand, a triu mask, tables in forward --------------


class EinsumAttention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int, base: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.base = heads, head_dim, base
        self.scaling = head_dim**-0.5
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, head_dim, bias=False)  # one kv head (MQA)
        self.v_proj = nn.Linear(width, head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, 1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, 1, self.head_dim).transpose(1, 2)
        # Rotary tables from scratch: inverse frequencies from arange and a power of the
        # base, float positions, an outer product.
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
        inv_freq = 1.0 / (self.base**exponents)
        positions = torch.arange(length, dtype=torch.float32)
        freqs = torch.outer(positions, inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.expand(batch, self.heads, length, self.head_dim)
        v = v.expand(batch, self.heads, length, self.head_dim)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scaling
        mask = torch.full((length, length), float("-inf")).triu(1)
        probs = F.softmax((scores + mask).float(), dim=-1).type_as(q)
        out = torch.einsum("bhqk,bhkd->bhqd", probs, v)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class Gemma1Layer(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.input_norm = RMSNorm(width)
        self.attn = EinsumAttention(width, heads, head_dim, base=10000.0)
        self.mlp_norm = RMSNorm(width)
        self.mlp = GatedMLP(width, hidden, gelu_erf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Gemma1Like(nn.Module):
    """Tied embedding, the normaliser a non-persistent buffer."""

    def __init__(self, vocab: int = 96, width: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.register_buffer("normalizer", torch.tensor(width**0.5), persistent=False)
        self.layers = nn.ModuleList(Gemma1Layer(width, heads, 8, 64) for _ in range(layers))
        self.norm = RMSNorm(width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * self.normalizer
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) @ self.embed.weight.t()


# -- Gemma 2: baddbmm scores, softcaps, a window from comparisons, repeat_interleave -----------


class BaddbmmAttention(nn.Module):
    def __init__(
        self, width: int, heads: int, kv_heads: int, head_dim: int, window: int | None
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.window = heads, kv_heads, head_dim, window
        self.softcap = 50.0
        self.qkv = nn.Linear(width, (heads + 2 * kv_heads) * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, width, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        kv_width = self.kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([self.heads * self.head_dim, kv_width, kv_width], dim=-1)
        q = q.reshape(batch, length, self.heads, self.head_dim).permute(0, 2, 1, 3)
        k = k.reshape(batch, length, self.kv_heads, self.head_dim).permute(0, 2, 1, 3)
        v = v.reshape(batch, length, self.kv_heads, self.head_dim).permute(0, 2, 1, 3)
        half = self.head_dim // 2
        q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
        k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
        groups = self.heads // self.kv_heads
        k = torch.repeat_interleave(k, groups, dim=1)
        v = torch.repeat_interleave(v, groups, dim=1)
        flat_q = q.reshape(batch * self.heads, length, self.head_dim)
        flat_k = k.reshape(batch * self.heads, length, self.head_dim)
        zeros = flat_q.new_zeros(batch * self.heads, length, length)
        scale = 1.0 / math.sqrt(self.head_dim)
        scores = torch.baddbmm(zeros, flat_q, flat_k.transpose(1, 2), beta=0.0, alpha=scale)
        scores = scores.view(batch, self.heads, length, length)
        scores = torch.tanh(scores / self.softcap) * self.softcap
        # Aligned to the end of the keys, ready for a cache: key ≤ query + (T − S).
        offset = k.shape[2] - q.shape[2]
        query = torch.arange(length).view(-1, 1)
        key = torch.arange(k.shape[2]).view(1, -1)
        allowed = key <= query + offset
        if self.window is not None:
            allowed = allowed & (query - key < self.window)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v)
        return self.out(out.permute(0, 2, 1, 3).reshape(batch, length, -1))


class Gemma2Layer(nn.Module):
    def __init__(self, width: int, window: int | None) -> None:
        super().__init__()
        self.pre_attn = SquareNorm(width)
        self.attn = BaddbmmAttention(width, heads=4, kv_heads=2, head_dim=16, window=window)
        self.post_attn = SquareNorm(width)
        self.pre_mlp = SquareNorm(width)
        self.mlp = GatedMLP(width, 80, gelu_tanh)
        self.post_mlp = SquareNorm(width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.post_attn(self.attn(self.pre_attn(x), cos, sin))
        return x + self.post_mlp(self.mlp(self.pre_mlp(x)))


class Gemma2Like(nn.Module):
    """Alternating sliding and global layers, inverse frequencies a non-persistent buffer,
    final logits soft-capped, an untied head."""

    def __init__(self, vocab: int = 80, width: int = 48, window: int = 4) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(Gemma2Layer(width, w) for w in (window, None, window))
        self.norm = SquareNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * math.sqrt(self.width)
        positions = torch.arange(input_ids.shape[1])
        freqs = positions[:, None].float() * self.inv_freq[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        cos, sin = torch.cos(angles), torch.sin(angles)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.head(self.norm(x))
        return 30.0 * torch.tanh(logits / 30.0)


# -- Gemma 3: SDPA (causal flag or a boolean window mask), q/k norms, two rope bases -----------


class SdpaAttention(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int, window: int | None):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.window = heads, kv_heads, head_dim, window
        self.base = 10000.0 if window is not None else 1000000.0
        self.scaling = 1.0 / math.sqrt(head_dim)
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)

    def tables(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length).unsqueeze(0).expand(batch, -1)
        inv_freq = torch.pow(self.base, -torch.arange(0, self.head_dim, 2).float() / self.head_dim)
        freqs = torch.einsum("bs,f->bsf", positions.float(), inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos()[:, None], angles.sin()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, length, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(batch, length, -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        cos, sin = self.tables(batch, length)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        k = k[:, :, None].expand(batch, self.kv_heads, groups, length, self.head_dim)
        v = v[:, :, None].expand(batch, self.kv_heads, groups, length, self.head_dim)
        k = k.reshape(batch, self.heads, length, self.head_dim)
        v = v.reshape(batch, self.heads, length, self.head_dim)
        if self.window is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        else:
            rows = torch.arange(length)[:, None]
            columns = torch.arange(length)[None, :]
            distance = rows - columns
            allowed = torch.logical_and(distance >= 0, distance < self.window)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scaling)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class Gemma3Layer(nn.Module):
    def __init__(self, width: int, window: int | None) -> None:
        super().__init__()
        self.input_norm = RMSNorm(width)
        self.attn = SdpaAttention(width, heads=4, kv_heads=2, head_dim=8, window=window)
        self.post_attn_norm = RMSNorm(width)
        self.pre_mlp_norm = RMSNorm(width)
        self.mlp = GatedMLP(width, 64, gelu_tanh)
        self.post_mlp_norm = RMSNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.post_attn_norm(self.attn(self.input_norm(x)))
        return x + self.post_mlp_norm(self.mlp(self.pre_mlp_norm(x)))


class Gemma3Like(nn.Module):
    """A sliding then a global layer; the embedding scale a persistent buffer (a weight)."""

    def __init__(self, vocab: int = 72, width: int = 32, window: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.register_buffer("embed_scale", torch.tensor(width**0.5))
        self.layers = nn.ModuleList(Gemma3Layer(width, w) for w in (window, None))
        self.final_norm = RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * self.embed_scale
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.final_norm(x))


# -- interleaved rotary pairs, an additive mask from tril and where -----------------------------


class InterleavedAttention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        even, odd = x[..., 0::2], x[..., 1::2]
        pairs = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return pairs.flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        inv_freq = 10000.0 ** (-torch.arange(0, self.head_dim, 2).float() / self.head_dim)
        angles = torch.arange(length).float()[:, None] * inv_freq
        q = self.rotate(q, angles.cos(), angles.sin())
        k = self.rotate(k, angles.cos(), angles.sin())
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        bias = torch.where(causal, 0.0, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class InterleavedLayer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.attn = InterleavedAttention(width, heads=2, head_dim=16)
        self.norm2 = RMSNorm(width)
        self.mlp = GatedMLP(width, 48, lambda x: F.gelu(x, approximate="tanh"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class InterleavedRope(nn.Module):
    """Rotary pairs interleaved (not Gemma's halves, so not ``rope.apply``), an additive
    mask from ``tril`` and ``where``, torch's own tanh GELU."""

    def __init__(self, vocab: int = 64, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(InterleavedLayer(width) for _ in range(2))
        self.norm = RMSNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        width = self.embed.weight.shape[1]
        x = self.embed(input_ids) * width**0.5
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x)) / width


# -- the table the tests read -----------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A model for the tests: its constructor, the longest reduction its logits go through
    (for the tolerance), how many of each tessera op its fused IR should hold, and each
    layer's attention window (None: causal over the whole sequence) and score softcap."""

    build: Callable[[], nn.Module]
    longest_reduction: int
    fused: dict[str, int]
    windows: tuple[int | None, ...]
    softcap: float | None = None


SPECS: dict[str, Spec] = {
    "gemma1_einsum": Spec(
        Gemma1Like,
        longest_reduction=64,
        fused={"attention.flash": 2, "rope.apply": 4, "norm.rms": 5, "mlp.swi_glu": 2},
        windows=(None, None),
    ),
    "gemma2_baddbmm": Spec(
        Gemma2Like,
        longest_reduction=80,
        fused={"attention.flash": 3, "rope.apply": 6, "norm.rms": 13, "mlp.swi_glu": 3},
        windows=(4, None, 4),
        softcap=50.0,
    ),
    "gemma3_sdpa": Spec(
        Gemma3Like,
        longest_reduction=64,
        fused={"attention.flash": 2, "rope.apply": 4, "norm.rms": 13, "mlp.swi_glu": 2},
        windows=(3, None),
    ),
    # Neither rope nor attention fuses here: the pairs are not Gemma's halves, and
    # canonicalize merges their flattening into the heads' collapse for the matmul, which
    # leaves no [B, H, S, D] query for tessera.attention.flash to take.
    "interleaved_rope": Spec(
        InterleavedRope,
        longest_reduction=48,
        fused={"attention.flash": 0, "rope.apply": 0, "norm.rms": 5, "mlp.swi_glu": 2},
        windows=(None, None),
    ),
}
