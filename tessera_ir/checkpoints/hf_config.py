"""Read a Hugging Face checkpoint's config.json and decide which model to build from it.

The config is parsed by transformers' own config classes (so defaults and renamed fields follow
transformers), but only after it has been read and checked here, so that a missing file, bad JSON
or an unsupported model type is reported naming config.json rather than as a transformers
traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tessera.errors import CheckpointError

CONFIG_NAME = "config.json"

# model_type -> (config class, model class), by name in transformers. A multimodal Gemma 3
# ("gemma3") is built as its text model alone.
MODEL_TYPES: dict[str, tuple[str, str]] = {
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "gemma3": ("Gemma3Config", "Gemma3ForCausalLM"),
}
MULTIMODAL_MODEL_TYPES = frozenset({"gemma3"})

# The dtypes a model may be built in, by the names config.json uses.
MODEL_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}

# Attention implementations the tracer handles; any other choice in a config becomes "eager".
TRACEABLE_ATTENTION = ("eager", "sdpa")


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the transformers class and the (text) config it is built from."""

    model_type: str
    model_class: Any  # a transformers PreTrainedModel subclass
    config: Any  # the transformers PretrainedConfig the model is built from
    dtype: torch.dtype
    attn_implementation: str

    @property
    def multimodal(self) -> bool:
        """The checkpoint holds a multimodal model of which only the text part is loaded."""
        return self.model_type in MULTIMODAL_MODEL_TYPES


def read_model_spec(directory: Path, dtype: torch.dtype | str | None) -> ModelSpec:
    """The model that ``directory``'s config.json describes, built in ``dtype`` (default: the
    config's ``dtype``/``torch_dtype``, float32 when it names none)."""
    path = directory / CONFIG_NAME
    raw = _read_config_json(path)
    where = str(path)

    if "quantization_config" in raw:
        raise CheckpointError(
            "quantized checkpoints are not supported (config.json has a quantization_config)",
            path=where,
        )
    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise CheckpointError("has no model_type (a string such as 'gemma2')", path=where)
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"model_type '{model_type}' is not supported (supported: "
            f"{', '.join(sorted(MODEL_TYPES))})",
            path=where,
        )

    text_raw = raw
    if model_type in MULTIMODAL_MODEL_TYPES:
        section = raw.get("text_config")
        if not isinstance(section, dict):
            raise CheckpointError(
                f"model_type '{model_type}' is a multimodal model, but config.json has no "
                "text_config object to build its text model from",
                path=where,
            )
        text_raw = section

    model_dtype = _resolve_dtype(dtype, raw, text_raw, where)
    config = _build_config(model_type, raw, where)
    attention = "eager" if model_type == "gemma2" else _attention_choice(raw, text_raw)
    import transformers

    model_class = getattr(transformers, MODEL_TYPES[model_type][1])
    return ModelSpec(model_type, model_class, config, model_dtype, attention)


def _read_config_json(path: Path) -> dict[str, Any]:
    """config.json as a JSON object."""
    where = str(path)
    if not path.is_file():
        raise CheckpointError(
            "missing: a Hugging Face checkpoint directory holds config.json next to its "
            "safetensors weights",
            path=where,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read the file: {error}", path=where) from error
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})", path=where
        ) from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"holds a JSON {type(raw).__name__}, expected an object", path=where)
    return raw


def _resolve_dtype(
    requested: torch.dtype | str | None,
    raw: dict[str, Any],
    text_raw: dict[str, Any],
    where: str,
) -> torch.dtype:
    """The requested dtype, else the config's (top level first, then a multimodal text_config's,
    under the current name ``dtype`` or the older ``torch_dtype``), else float32."""
    if requested is not None:
        return model_dtype_from_argument(requested)
    for source in (raw, text_raw):
        for field in ("dtype", "torch_dtype"):
            name = source.get(field)
            if name is None:
                continue
            if name not in MODEL_DTYPES:
                raise CheckpointError(
                    f"{field} {name!r} is not a dtype a model can be built in (one of "
                    f"{', '.join(MODEL_DTYPES)})",
                    path=where,
                )
            return MODEL_DTYPES[name]
    return torch.float32


def model_dtype_from_argument(requested: torch.dtype | str) -> torch.dtype:
    """Check a caller's ``dtype`` argument: a floating torch.dtype or its name."""
    if isinstance(requested, str):
        if requested not in MODEL_DTYPES:
            raise ValueError(f"dtype '{requested}' is not one of {', '.join(MODEL_DTYPES)}")
        return MODEL_DTYPES[requested]
    if not isinstance(requested, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or its name, not {type(requested).__name__}")
    if requested not in MODEL_DTYPES.values():
        raise ValueError(f"dtype {requested} is not one of {', '.join(MODEL_DTYPES)}")
    return requested


def _build_config(model_type: str, raw: dict[str, Any], where: str) -> Any:
    """The transformers config of the model to build: for a multimodal Gemma 3, its text config,
    tied as the multimodal config says (the multimodal model ties its head to the text model's
    embedding by the top-level ``tie_word_embeddings``)."""
    import transformers

    config_class = getattr(transformers, MODEL_TYPES[model_type][0])
    source = raw
    if model_type in MULTIMODAL_MODEL_TYPES:
        # The vision tower is never built; leaving its config out keeps a config that only
        # the vision side would reject from failing a text-only load.
        source = {key: value for key, value in raw.items() if key != "vision_config"}
    try:
        config = config_class.from_dict(source)
    # transformers' config validation raises many types (its strict-dataclass errors derive
    # from Exception directly, derived fields can divide by zero), so the boundary is broad.
    except Exception as error:
        raise CheckpointError(
            f"does not describe a valid {config_class.__name__}: {error}", path=where
        ) from error
    if model_type in MULTIMODAL_MODEL_TYPES:
        text_config = config.text_config
        text_config.tie_word_embeddings = config.tie_word_embeddings
        return text_config
    return config


def _attention_choice(raw: dict[str, Any], text_raw: dict[str, Any]) -> str:
    """The config's attention implementation when the tracer handles it, else eager."""
    for source in (raw, text_raw):
        for field in ("attn_implementation", "_attn_implementation"):
            choice = source.get(field)
            if choice is not None:
                return choice if choice in TRACEABLE_ATTENTION else "eager"
    return "eager"
