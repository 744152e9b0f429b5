"""Read a checkpoint's config.json through transformers' AutoConfig and decide which model to build.

AutoConfig parses the file and picks the config class from its ``model_type`` (so defaults, renamed
fields and validation follow transformers). What stays here is what AutoConfig does not do: its
errors are rewrapped to name config.json (a missing file would otherwise be reported as a missing
``model_type``), only the Gemma families are accepted, a multimodal Gemma 3 becomes its text model,
and the model dtype and attention implementation are chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tessera.errors import CheckpointError

CONFIG_NAME = "config.json"

# model_type -> the transformers class that is built. A multimodal Gemma 3 ("gemma3") is built as
# its text model alone.
MODEL_CLASSES: dict[str, str] = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
MULTIMODAL_MODEL_TYPES = frozenset({"gemma3"})

# The dtype argument that keeps the checkpoint's own (transformers' spelling).
AUTO = "auto"
# The dtypes a model may be built in, by the names config.json, callers and the command line
# use (torch's names).
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
    config's ``dtype``, float32 when it names none)."""
    path = directory / CONFIG_NAME
    where = str(path)
    if not path.is_file():
        raise CheckpointError(
            "missing: a checkpoint folder holds config.json next to its weights", path=where
        )
    # A bad argument is the caller's error, reported before the file is looked at.
    requested = model_dtype_from_argument(dtype) if dtype is not None else None
    loaded = _auto_config(directory, where)

    model_type = loaded.model_type
    if model_type not in MODEL_CLASSES:
        raise CheckpointError(
            f"model_type '{model_type}' is not supported (supported: "
            f"{', '.join(sorted(MODEL_CLASSES))})",
            path=where,
        )
    if getattr(loaded, "quantization_config", None) is not None:
        raise CheckpointError(
            "quantized checkpoints are not supported (config.json has a quantization_config)",
            path=where,
        )
    config = loaded
    if model_type in MULTIMODAL_MODEL_TYPES:
        # (A config.json without text_config gets transformers' default text config, whose
        # shapes the weights then fail to match, naming the first tensor that differs.)
        config = loaded.text_config
        # The multimodal model ties its head to the text model's embedding by the top-level flag.
        config.tie_word_embeddings = loaded.tie_word_embeddings

    model_dtype = requested or _config_dtype(loaded, config, where)
    attention = "eager" if model_type == "gemma2" else _attention_choice(loaded, config)
    import transformers

    model_class = getattr(transformers, MODEL_CLASSES[model_type])
    return ModelSpec(model_type, model_class, config, model_dtype, attention)


def _auto_config(directory: Path, where: str) -> Any:
    """AutoConfig's reading of config.json, its errors naming the file."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    # AutoConfig raises OSError for unreadable or invalid JSON, ValueError for an unknown or
    # absent model_type, and its strict-dataclass validation errors derive from Exception
    # directly, so the boundary is broad.
    except Exception as error:
        raise CheckpointError(
            f"transformers' AutoConfig cannot read it: {_first_line(error)}", path=where
        ) from error


def _first_line(error: BaseException) -> str:
    """An exception's message up to its first blank line (transformers appends advice)."""
    return str(error).strip().split("\n\n")[0]


def _config_dtype(loaded: Any, text: Any, where: str) -> torch.dtype:
    """The config's dtype (top level first, then a multimodal text config's), else float32."""
    for source in (loaded, text):
        # transformers 5 reads config.json's "dtype" and the older "torch_dtype" into ``dtype``
        # (its ``torch_dtype`` is a deprecated alias that warns); older versions keep
        # ``torch_dtype`` alone.
        field = "dtype" if hasattr(source, "dtype") else "torch_dtype"
        value = getattr(source, field, None)
        if value is None:
            continue
        dtype = MODEL_DTYPES.get(value) if isinstance(value, str) else value
        if not isinstance(dtype, torch.dtype) or dtype not in MODEL_DTYPES.values():
            name = str(value).removeprefix("torch.")
            raise CheckpointError(
                f"dtype '{name}' is not a dtype a model can be built in (one of "
                f"{', '.join(MODEL_DTYPES)})",
                path=where,
            )
        return dtype
    return torch.float32


def model_dtype_from_argument(requested: torch.dtype | str) -> torch.dtype | None:
    """Check a caller's ``dtype`` argument: a floating torch.dtype, its name, or ``"auto"``
    (None: the checkpoint's own, as ``from_pretrained(dtype="auto")``)."""
    if requested == AUTO:
        return None
    if isinstance(requested, str):
        if requested not in MODEL_DTYPES:
            raise ValueError(
                f"dtype '{requested}' is not one of {', '.join((AUTO, *MODEL_DTYPES))}"
            )
        return MODEL_DTYPES[requested]
    if not isinstance(requested, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or its name, not {type(requested).__name__}")
    if requested not in MODEL_DTYPES.values():
        raise ValueError(f"dtype {requested} is not one of {', '.join(MODEL_DTYPES)}")
    return requested


def _attention_choice(loaded: Any, text: Any) -> str:
    """The config's attention implementation when the tracer handles it, else eager."""
    for source in (loaded, text):
        choice = getattr(source, "_attn_implementation", None)
        if isinstance(choice, str):
            return choice if choice in TRACEABLE_ATTENTION else "eager"
    return "eager"
