"""The traced high-level IR computes what transformers computes: tiny Gemma 1/2/3 models (eager
and sdpa attention, f32 and bf16) and a custom decoder, lowered unfused by the CPU pipeline and
run.
"""

from __future__ import annotations

import pytest
import seeds
import torch

from tessera.context import make_context, parse_module
from tessera.dialects import verify_module
from tessera.frontend import trace
from tessera.lowering.cpu.jit import JitFunction
from tessera.lowering.cpu.pipeline import lower
from tessera.models.tiny import tiny_gemma


class Compiled:
    """The traced ``forward``, lowered by the CPU pipeline and JIT-compiled once."""

    def __init__(self, model: torch.nn.Module) -> None:
        context = make_context()
        self.program = trace(model, context)
        assert verify_module(self.program.module.operation) == []
        lowered = parse_module(str(self.program.module), context)
        lower(lowered)
        # opt_level 0: these tests check numerics, and LLVM's O3 takes seconds per model.
        self.function = JitFunction(self.program.module, "forward", lowered, opt_level=0)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.function([ids, *[p.detach() for p in self.program.parameters]])


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return float((out.double() - reference).norm() / reference.norm())


def _ids(vocab: int, length: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=seeds.generator())


LENGTHS = (7, 19)

# -- transformers' Gemma models ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "attention"),
    [
        ("gemma1-mqa", "eager"),
        ("gemma1-mha", "sdpa"),
        ("gemma2-gqa", "eager"),
        ("gemma3-gqa", "eager"),
        ("gemma3-gqa", "sdpa"),
        ("gemma3-mqa-odd", "sdpa"),
    ],
)
def test_f32_logits_match_transformers(name: str, attention: str) -> None:
    model = tiny_gemma(name, torch.float32, attn_implementation=attention)
    compiled = Compiled(model)
    for length in LENGTHS:
        ids = _ids(model.config.vocab_size, length)
        with torch.no_grad():
            reference = model(ids, use_cache=False).logits
        out = compiled(ids)
        assert out.shape == reference.shape
        assert relative_error(out, reference) <= 1e-4, (name, attention, length)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "attention"),
    [
        ("gemma1-mqa", "eager"),
        ("gemma2-gqa", "eager"),
        ("gemma3-gqa", "sdpa"),
        ("gemma3-mqa-odd", "eager"),
    ],
)
def test_bf16_logits_are_bf16_accurate(name: str, attention: str) -> None:
    """Against float64 on the same (bf16-rounded) weights: at least 1e-3 off (the work really
    is in bf16), at most 1e-2, never NaN. For configs where transformers' own bf16 run is
    further off than 1e-2 (random tiny weights make logits sensitive), the bound is 1.25×
    transformers' own error instead."""
    model = tiny_gemma(name, torch.bfloat16, attn_implementation=attention)
    exact = tiny_gemma(name, torch.bfloat16, attn_implementation=attention).to(torch.float64)
    compiled = Compiled(model)
    for length in LENGTHS:
        ids = _ids(model.config.vocab_size, length)
        with torch.no_grad():
            reference = exact(ids, use_cache=False).logits
            transformers_error = relative_error(model(ids, use_cache=False).logits, reference)
        out = compiled(ids)
        assert out.dtype == torch.bfloat16 and not torch.isnan(out).any()
        error = relative_error(out, reference)
        assert 1e-3 <= error <= max(1e-2, 1.25 * transformers_error), (name, length, error)


# -- a decoder built from the same kinds of parts --------------------------------------------


class Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.Parameter(torch.randn(width) * 0.1)
        self.up = torch.nn.Linear(width, 2 * width)
        self.down = torch.nn.Linear(2 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * (1 + self.norm)
        return x + self.down(torch.nn.functional.silu(self.up(normed)))


class TinyDecoder(torch.nn.Module):
    def __init__(self, vocab: int = 50, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(Block(width) for _ in range(depth))
        self.head = torch.nn.Linear(width, vocab)
        self.width = width
        inv_freq = 1.0 / (100.0 ** (torch.arange(0, width, 2).float() / width))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # A constant computed in forward (folded by torch) ...
        x = self.embed(input_ids) * torch.arange(1, self.width + 1).float().rsqrt()
        # ... and sinusoidal positions: an iota times a non-persistent buffer.
        angles = torch.arange(input_ids.shape[1]).float()[:, None] * self.inv_freq
        x = x + torch.cat([angles.cos(), angles.sin()], dim=-1)
        for block in self.blocks:
            x = block(x)
        return self.head(x) / 2.0


@pytest.mark.slow
def test_custom_decoder_matches_torch() -> None:
    model = TinyDecoder().eval()
    compiled = Compiled(model)
    assert compiled.program.model_kind == "custom"
    for length in LENGTHS:
        ids = _ids(50, length)
        with torch.no_grad():
            reference = model(ids)
        assert relative_error(compiled(ids), reference) <= 1e-5


class CausalAttention(torch.nn.Module):
    """Grouped-query attention through sdpa's own ``is_causal`` and ``enable_gqa``."""

    def __init__(self, vocab: int = 50, heads: int = 4, kv_heads: int = 2, dim: int = 8) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.dim = heads, kv_heads, dim
        width = heads * dim
        self.embed = torch.nn.Embedding(vocab, width)
        self.q = torch.nn.Linear(width, width, bias=False)
        self.kv = torch.nn.Linear(width, 2 * kv_heads * dim, bias=False)
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        batch, length, _ = x.shape
        q = self.q(x).view(batch, length, self.heads, self.dim).transpose(1, 2)
        k, v = self.kv(x).view(batch, length, 2, self.kv_heads, self.dim).permute(2, 0, 3, 1, 4)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=True
        )
        return self.head(o.transpose(1, 2).reshape(batch, length, -1))


@pytest.mark.slow
def test_causal_grouped_query_attention_matches_torch() -> None:
    model = CausalAttention().eval()
    compiled = Compiled(model)
    for length in LENGTHS:
        ids = _ids(50, length)
        with torch.no_grad():
            reference = model(ids)
        assert relative_error(compiled(ids), reference) <= 1e-5


class Assorted(torch.nn.Module):
    """A block using many of the translated ops at once, checked against torch."""

    def __init__(self, vocab: int = 40, width: int = 12) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, 3 * width) for _ in range(2))
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            a, b, c = block(x).split(x.shape[-1], dim=-1)
            gate = torch.nn.functional.gelu(a) * torch.sigmoid(b) + torch.relu(c) * 0.3
            peak = gate.amax(dim=-1, keepdim=True)
            gate = torch.where(gate > 0, gate, gate.exp() - 1) / (peak.abs() + 1)
            mixed = torch.bmm(gate.transpose(1, 2), gate) / gate.shape[1]  # [B, W, W]
            spread = torch.maximum(mixed.sum(dim=1), -mixed.sum(dim=2)).unsqueeze(1)
            x = (
                x
                + torch.cat([gate[..., ::2], gate[..., 1::2]], dim=-1) * 0.5
                - spread.neg().log1p()
            )
            x = x - x.mean(dim=-1, keepdim=True)
        return self.head(x).permute(0, 1, 2)


@pytest.mark.slow
def test_assorted_ops_match_torch() -> None:
    model = Assorted().eval()
    compiled = Compiled(model)
    for length in LENGTHS:
        ids = _ids(40, length)
        with torch.no_grad():
            reference = model(ids)
        assert relative_error(compiled(ids), reference) <= 1e-5
