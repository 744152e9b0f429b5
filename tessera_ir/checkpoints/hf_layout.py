"""How a checkpoint's tensor names map onto the state-dict keys of the model we build.

A Hugging Face text checkpoint uses the model's own keys (``model.layers.0...``,
``lm_head.weight``). A multimodal Gemma 3 checkpoint nests the text model, in one of two layouts:

- ``language_model.model.layers.0...`` (+ ``language_model.lm_head.weight``), with
  ``vision_tower.*`` and ``multi_modal_projector.*``: the checkpoints Google published, and what
  transformers 5 writes again (it converts back to this layout on save);
- ``model.language_model.layers.0...`` (+ ``lm_head.weight``), with ``model.vision_tower.*`` and
  ``model.multi_modal_projector.*``: what transformers 4.52-4.57 wrote (its in-memory names).

A gemma_pytorch checkpoint (``.ckpt``) names the embedding ``embedder.weight`` (multimodal Gemma 3:
``text_token_embedder.weight``), the QK norms ``query_norm``/``key_norm``, stores q, k and v fused
as the rows of one ``qkv_proj`` and keeps its rotary tables (``freqs_cis``) in the state dict.

Vision tower and projector tensors are ignored; the text model's head, when absent, is tied to
its embedding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tessera.errors import CheckpointError

# Old checkpoints stored the rotary frequencies; the model derives them from the config.
DERIVED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class KeyLayout:
    """Prefix rewrites from checkpoint names to model keys, then infix rewrites, fused tensors
    split into several model tensors, and names to skip."""

    name: str
    renames: tuple[tuple[str, str], ...]  # (checkpoint prefix, model prefix)
    ignored_prefixes: tuple[str, ...] = ()
    ignored_names: frozenset[str] = frozenset()
    infixes: tuple[tuple[str, str], ...] = ()  # (checkpoint infix, model infix)
    # checkpoint infix -> the model infixes of its parts, stacked along dim 0 in this order.
    fused: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def model_keys(self, checkpoint_key: str) -> tuple[str, ...] | None:
        """The model keys a checkpoint tensor loads into (several: its dim-0 parts, in order),
        or None when no rename covers it."""
        for source, target in self.renames:
            if checkpoint_key.startswith(source):
                key = target + checkpoint_key[len(source) :]
                break
        else:
            return None
        for source, target in self.infixes:
            key = key.replace(source, target)
        for source, parts in self.fused:
            if source in key:
                return tuple(key.replace(source, part) for part in parts)
        return (key,)

    def checkpoint_key(self, model_key: str) -> str:
        """The name a model key has in checkpoints of this layout (for messages)."""
        key = model_key
        for source, parts in self.fused:
            for part in parts:
                key = key.replace(part, source)
        for source, target in self.infixes:
            key = key.replace(target, source)
        for source, target in self.renames:
            if key.startswith(target):
                return source + key[len(target) :]
        return key

    def ignores(self, checkpoint_key: str) -> bool:
        """The tensor belongs to a part we do not build, or is derived from the config."""
        return (
            checkpoint_key in self.ignored_names
            or checkpoint_key.startswith(self.ignored_prefixes)
            or checkpoint_key.endswith(DERIVED_SUFFIXES)
        )


TEXT_LAYOUT = KeyLayout("text", (("model.", "model."), ("lm_head.", "lm_head.")))

MULTIMODAL_LAYOUTS = (
    KeyLayout(
        "language_model.model.*",
        (("language_model.model.", "model."), ("language_model.lm_head.", "lm_head.")),
        ("vision_tower.", "multi_modal_projector."),
    ),
    KeyLayout(
        "model.language_model.*",
        (("model.language_model.", "model."), ("lm_head.", "lm_head.")),
        ("model.vision_tower.", "model.multi_modal_projector."),
    ),
)

GEMMA_PYTORCH_LAYOUT = KeyLayout(
    "gemma_pytorch",
    (
        ("embedder.", "model.embed_tokens."),
        ("text_token_embedder.", "model.embed_tokens."),
        ("model.", "model."),
    ),
    ignored_prefixes=("siglip_vision_model.", "mm_soft_embedding_norm.", "mm_input_projection."),
    # The rotary tables gemma_pytorch precomputes (complex); the model derives its own.
    ignored_names=frozenset({"freqs_cis", "local_freqs_cis", "global_freqs_cis"}),
    infixes=(
        (".self_attn.query_norm.", ".self_attn.q_norm."),
        (".self_attn.key_norm.", ".self_attn.k_norm."),
    ),
    fused=(
        (
            ".self_attn.qkv_proj.",
            (".self_attn.q_proj.", ".self_attn.k_proj.", ".self_attn.v_proj."),
        ),
    ),
)


def detect_layout(multimodal: bool, keys: Iterable[str], where: str) -> KeyLayout:
    """The layout of a Hugging Face checkpoint with these tensor names; a multimodal one is
    recognised by where its text model's tensors live (exactly one of the known prefixes)."""
    if not multimodal:
        return TEXT_LAYOUT
    keys = list(keys)
    found = [
        layout
        for layout in MULTIMODAL_LAYOUTS
        if any(key.startswith(layout.renames[0][0]) for key in keys)
    ]
    prefixes = " and ".join(layout.renames[0][0] for layout in MULTIMODAL_LAYOUTS)
    if not found:
        raise CheckpointError(
            f"multimodal Gemma 3 checkpoint has no text-model tensors (looked under {prefixes})",
            path=where,
        )
    if len(found) > 1:
        raise CheckpointError(
            f"multimodal Gemma 3 checkpoint mixes two layouts (tensors under both {prefixes})",
            path=where,
        )
    return found[0]
