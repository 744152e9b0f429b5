"""Tiny Gemma 1/2/3 models with seeded random weights, built from transformers' own classes.

They exercise every feature the real models use (GQA/MQA, head_dim ≠ hidden/heads, softcaps,
sliding windows, QK-norm, linear rope scaling) at sizes that compile and run in seconds.
"""

from __future__ import annotations

from typing import Any

import torch

# Named configurations; the tests and the main job refer to them by name.
CONFIGS: dict[str, dict[str, Any]] = {
    # Gemma 1, MQA like Gemma-2B, head_dim ≠ hidden/heads.
    "gemma1-mqa": dict(
        generation=1,
        init_std=0.08,
        vocab_size=203,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
    ),
    # Gemma 1, MHA like Gemma-7B.
    "gemma1-mha": dict(
        generation=1,
        init_std=0.08,
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=16,
    ),
    # (transformers' Gemma 2 has no sdpa path: it needs the softcap, so eager only.)
    # Gemma 2: GQA, attention and final softcaps, a sliding window on every other layer.
    "gemma2-gqa": dict(
        generation=2,
        init_std=1.0,
        vocab_size=160,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        sliding_window=6,
        query_pre_attn_scalar=20,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
    ),
    # Gemma 3: QK-norm, 2 local : 1 global layers, linear rope scaling on global layers.
    "gemma3-gqa": dict(
        generation=3,
        init_std=0.5,
        vocab_size=192,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        sliding_window=5,
        query_pre_attn_scalar=32,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    ),
    # Gemma 3 with MQA and odd sizes.
    "gemma3-mqa-odd": dict(
        generation=3,
        init_std=0.5,
        vocab_size=97,
        hidden_size=36,
        intermediate_size=72,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention"],
    ),
    # Not tiny: a Gemma-1-shaped model big enough that the kernels, not call overheads, decide
    # the speed (benchmarks).
    "gemma1-small": dict(
        generation=1,
        init_std=0.05,
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=64,
    ),
}

# Real shapes with random weights, for GPU benchmarks (not in CONFIGS, which tests iterate):
# Gemma 2B (Gemma 1) and Gemma 3 1B.
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "gemma-2b": dict(
        generation=1,
        init_std=0.02,
        vocab_size=256000,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
    ),
    "gemma3-1b": dict(
        generation=3,
        init_std=0.02,
        vocab_size=262144,
        hidden_size=1152,
        intermediate_size=6912,
        num_hidden_layers=26,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        sliding_window=512,
        query_pre_attn_scalar=256,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        layer_types=[
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)
        ],
    ),
}

DEFAULT = "gemma2-gqa"


def tiny_config(name: str, attn_implementation: str = "eager") -> tuple[Any, type, float]:
    """The transformers config of a named model, its model class and its weights' scale."""
    known = {**CONFIGS, **REAL_SHAPES}
    if name not in known:
        raise KeyError(f"unknown tiny model '{name}' (known: {', '.join(sorted(known))})")
    import transformers

    settings = dict(known[name])
    generation = settings.pop("generation")
    init_std = settings.pop("init_std")
    classes = {
        1: (transformers.GemmaConfig, transformers.GemmaForCausalLM),
        2: (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
        3: (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
    }
    config_class, model_class = classes[generation]
    config = config_class(**settings, attn_implementation=attn_implementation)
    return config, model_class, init_std


def tiny_gemma(
    name: str = DEFAULT,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "eager",
    device: str = "cpu",
) -> torch.nn.Module:
    """A transformers Gemma/Gemma2/Gemma3ForCausalLM with seeded random weights, in eval mode.

    Norm weights are random too (they are zero at initialisation, which would hide bugs in the
    (1 + w) offset). Each configuration's ``init_std`` scales the matrices so that activations
    and logits have a realistic spread: then bf16 rounding behaves as in real checkpoints
    (transformers' own bf16 logits stay within 1e-2 of a float64 run)."""
    config, model_class, init_std = tiny_config(name, attn_implementation)
    torch.manual_seed(seed)
    if device != "cpu":
        # Built where it runs, in its dtype: the real-shape models would not fit a CPU copy
        # in float32 comfortably (the weights differ from a CPU build with the same seed).
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = model_class(config)
        finally:
            torch.set_default_dtype(previous)
        generator = torch.Generator(device=device).manual_seed(seed)
    else:
        model = model_class(config)
        generator = None
    with torch.no_grad():
        for parameter in model.parameters():
            std = init_std if parameter.dim() > 1 else 0.1
            noise = (
                torch.randn(
                    parameter.shape,
                    generator=generator,
                    device=parameter.device,
                    dtype=parameter.dtype,
                )
                if generator is not None
                else torch.randn_like(parameter)
            )
            parameter.copy_(noise * std)
    return model.to(dtype).eval()
