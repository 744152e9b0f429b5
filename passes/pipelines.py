"""Named pipelines: one name for a sequence of passes, usable wherever a pass name is."""

from __future__ import annotations

from tessera.pass_registry import register_pipeline

# The high → mid step. Attention and rope go first: their chains contain multiplies and
# reshapes that the projection and norm patterns must not take apart. The norm and the gated
# MLP go before tessera-fuse-proj so that they see their Linears whole (the MLP also accepts
# projections, so the order is a preference, not a requirement).
register_pipeline(
    "tessera-fuse",
    [
        "canonicalize",
        "cse",
        "tessera-fuse-attention",
        "tessera-fuse-rope",
        "tessera-fuse-rms-norm",
        "tessera-fuse-gated-mlp",
        "tessera-fuse-proj",
        "tessera-fuse-lookup",
        "canonicalize",
        "cse",
    ],
    "Fuse high-level IR into tessera ops: attention, rope, rms norm, gated MLP, projections "
    "and the embedding lookup, with canonicalize and cse before and after.",
)
