"""How a checkpoint's tensor names map onto the state-dict keys of the model we build.

A text checkpoint uses the model's own keys (``model.layers.0...``, ``lm_head.weight``). A
multimodal Gemma 3 checkpoint nests the text model, in one of two layouts:

- ``language_model.model.layers.0...`` (+ ``language_model.lm_head.weight``), with
  ``vision_tower.*`` and ``multi_modal_projector.*``: the checkpoints Google published, and what
  transformers 5 writes again (it converts back to this layout on save);
- ``model.language_model.layers.0...`` (+ ``lm_head.weight``), with ``model.vision_tower.*`` and
  ``model.multi_modal_projector.*``: what transformers 4.52-4.57 wrote (its in-memory names).

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
    """Prefix rewrites from checkpoint names to model keys, plus prefixes to skip."""

    name: str
    renames: tuple[tuple[str, str], ...]  # (checkpoint prefix, model prefix)
    ignored_prefixes: tuple[str, ...] = ()

    def model_key(self, checkpoint_key: str) -> str | None:
        """The model key a checkpoint tensor loads into, or None when no rename covers it."""
        for source, target in self.renames:
            if checkpoint_key.startswith(source):
                return target + checkpoint_key[len(source) :]
        return None

    def checkpoint_key(self, model_key: str) -> str:
        """The name a model key has in checkpoints of this layout (for messages)."""
        for source, target in self.renames:
            if model_key.startswith(target):
                return source + model_key[len(target) :]
        return model_key

    def ignores(self, checkpoint_key: str) -> bool:
        """The tensor belongs to a part we do not build, or is derived from the config."""
        return checkpoint_key.startswith(self.ignored_prefixes) or checkpoint_key.endswith(
            DERIVED_SUFFIXES
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


def detect_layout(multimodal: bool, keys: Iterable[str], where: str) -> KeyLayout:
    """The layout of a checkpoint with these tensor names; a multimodal one is recognised by
    where its text model's tensors live (exactly one of the known prefixes)."""
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
