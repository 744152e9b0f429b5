"""tessera-fuse-rope: x·cos + rotate_half(x)·sin becomes ``tessera.rope.apply``
(docs/high-level-ir.md, "What each fusion pass recognises").

``tessera.rope.apply`` takes x as [B, S, H, D]. Hugging Face's Gemma transposes q and k to
[B, H, S, D] before rope, so when x is such a transpose the op reads the transpose's input and
its result is transposed back; other [B, H, S, D] values get transposes on both sides (which
canonicalize folds where they meet others)."""

from __future__ import annotations

from mlir import ir

from tessera.dialects import RopeApply
from tessera.pass_registry import NoOptions, register_pass

from .match import i64_array_attr, producer_named, replace_and_sweep, rewrite_anchors
from .rope_layout import SWAP_HEADS_AND_TOKENS, positions_for, transpose
from .rope_match import ANCHORS, RopeMatch, match_rope


def rewrite_rope(found: RopeMatch) -> None:
    """Replaces the matched add by ``tessera.rope.apply`` (between transposes if needed)."""
    root = found.root
    matched = list(found.matched)
    loc = root.location
    with loc, ir.InsertionPoint(root):
        if found.seq_axis == 1:
            x = found.x
        else:
            swap = producer_named(found.x, "linalg.transpose")
            if swap is not None and i64_array_attr(swap, "permutation") == list(
                SWAP_HEADS_AND_TOKENS
            ):
                x = swap.operands[0]
                matched.append(swap)
            else:
                x = transpose(found.x, SWAP_HEADS_AND_TOKENS)
        rope = RopeApply.build(
            [x, positions_for(found.positions, x)],
            [x.type],
            loc=loc,
            theta=found.theta,
            scaling=found.scaling,
            rotary_dim=found.rotary_dim,
            layout="half_split",
        )
        result = rope.y
        if found.seq_axis != 1:
            result = transpose(result, SWAP_HEADS_AND_TOKENS)
    replace_and_sweep(root, [result], matched)


@register_pass("tessera-fuse-rope")
def fuse_rope(module: ir.Operation, options: NoOptions) -> None:
    """Fuse rotary position embeddings (x·cos + rotate_half(x)·sin with cos/sin computed from
    integer positions and theta^(-2i/d)/scaling frequencies) into tessera.rope.apply. Chains
    that do not match exactly are left unchanged."""
    rewrite_anchors(module, ANCHORS, match_rope, rewrite_rope)
