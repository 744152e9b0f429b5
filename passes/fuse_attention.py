"""tessera-fuse-attention: q·kᵀ → scale → [softcap] → [mask] → softmax → ·v becomes one
``tessera.attention.flash`` (docs/high-level-ir.md, "What each fusion pass recognises")."""

from __future__ import annotations

from mlir import ir

from tessera.dialects import FlashAttention
from tessera.dialects.attention_flash import DEFAULT_TILE
from tessera.pass_registry import NoOptions, register_pass

from .attention_match import ANCHORS, AttentionMatch, match_attention
from .match import replace_with_op, rewrite_anchors


def rewrite_attention(found: AttentionMatch) -> None:
    """Replaces the matched chain by ``tessera.attention.flash`` on the unrepeated k, v."""
    replace_with_op(
        found.root,
        FlashAttention,
        [found.q, found.k, found.v],
        found.matched,
        causal=found.causal,
        scale=found.scale,
        softcap=found.softcap,
        window=found.window,
        tile=DEFAULT_TILE,
    )


@register_pass("tessera-fuse-attention")
def fuse_attention(module: ir.Operation, options: NoOptions) -> None:
    """Fuse attention (q·kᵀ, scale, optional softcap, causal or sliding-window mask or none,
    softmax over the keys, ·v; k and v optionally GQA-repeated) into
    tessera.attention.flash. Chains that do not match exactly are left unchanged."""
    rewrite_anchors(module, ANCHORS, match_attention, rewrite_attention)
