"""Load a Hugging Face Gemma checkpoint directory into its transformers model.

Everything is checked before any tensor is read: config.json, the file set, every safetensors
header, and every tensor's name, shape and dtype against the model's state dict (taken from a
copy of the model built on the meta device, which costs no memory). Only then is the model
built for real and filled, so a bad checkpoint fails fast and a load never stops half way.

Files are only ever opened for reading (headers with ``open(..., "rb")``, tensors through
safetensors' read-only memory map); nothing is written into the checkpoint directory.

Dtypes: tensors stored in any floating-point dtype (F64, F32, F16, BF16, F8_E4M3, F8_E5M2) are
converted to the model's dtype with torch's round-to-nearest-even (as transformers does when
asked for a dtype); choosing the dtype is choosing that rounding. Integer, bool, complex and
quantisation-only dtypes are never converted to floats: such a tensor is an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tessera.errors import CheckpointError

from .hf_config import CONFIG_NAME, ModelSpec, read_model_spec
from .hf_files import WeightFiles, find_weight_files
from .hf_layout import KeyLayout, detect_layout
from .safetensors_header import FLOAT_DTYPES, OTHER_DTYPES, TensorEntry

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# How many unexpected tensor names an error lists before summarising.
NAMES_SHOWN = 5


@dataclass(frozen=True)
class TensorSource:
    """A tensor of the checkpoint: its name, file and header entry."""

    key: str
    file: Path
    entry: TensorEntry


@dataclass(frozen=True)
class LoadItem:
    """One model tensor (several keys when weights are tied) and the checkpoint tensors that
    fill it: the first is loaded, any others must hold the same values."""

    model_keys: tuple[str, ...]
    sources: tuple[TensorSource, ...]


def load_hf_checkpoint(
    path: str | os.PathLike[str], dtype: torch.dtype | str | None = None
) -> PreTrainedModel:
    """The transformers Gemma/Gemma2/Gemma3ForCausalLM held in the Hugging Face checkpoint
    directory ``path`` (config.json + safetensors), in eval mode.

    ``dtype`` (a floating torch.dtype or its name) overrides the config's dtype (float32 when the
    config names none). A multimodal Gemma 3 checkpoint gives its text model. Raises
    CheckpointError naming the file and tensor at fault."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(
            "is not a directory (expected a Hugging Face checkpoint directory holding "
            "config.json and safetensors weights)",
            path=str(directory),
        )
    spec = read_model_spec(directory, dtype)
    files = find_weight_files(directory)
    layout = detect_layout(spec.multimodal, files.location, str(files.expected_home()))
    try:
        skeleton = build_model(spec, torch.device("meta"))
    # A config transformers accepted can still fail the model's constructor, in any way.
    except Exception as error:
        raise CheckpointError(
            f"cannot build {spec.model_class.__name__} from this config: {error}",
            path=str(directory / CONFIG_NAME),
        ) from error
    items = plan_load(skeleton, layout, files)
    with _open_all(files) as handles:
        model = build_model(spec, None)
        _fill(model, items, handles)
    return model.eval()


def plan_load(model: torch.nn.Module, layout: KeyLayout, files: WeightFiles) -> list[LoadItem]:
    """Match the checkpoint's tensors to ``model``'s state dict: every model tensor found once
    (tied keys share one), with the right shape and a dtype that converts; no tensor left
    over. Reads headers only."""
    expected = model.state_dict(keep_vars=True)
    model_name = type(model).__name__
    available: dict[str, TensorSource] = {}
    unexpected: list[TensorSource] = []
    for key, file in files.location.items():
        if layout.ignores(key):
            continue
        source = TensorSource(key, file, files.headers[file][key])
        model_key = layout.model_key(key)
        if model_key is None or model_key not in expected:
            unexpected.append(source)
        else:
            available[model_key] = source

    items: list[LoadItem] = []
    for keys in _tied_groups(expected):
        present = [key for key in keys if key in available]
        if not present:
            raise _missing_error(keys[0], expected[keys[0]], model_name, layout, files, unexpected)
        for key in present:
            _check_tensor(available[key], key, expected[key], model_name)
        items.append(LoadItem(keys, tuple(available[key] for key in present)))

    if unexpected:
        first = unexpected[0]
        raise CheckpointError(
            f"the checkpoint holds {len(unexpected)} tensor(s) that {model_name} does not "
            f"have: {_names(unexpected)}",
            path=str(first.file),
            key=first.key,
        )
    return items


def _tied_groups(state: dict[str, torch.Tensor]) -> list[tuple[str, ...]]:
    """State-dict keys grouped by the tensor they name (tied weights are one tensor)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)
    return [tuple(keys) for keys in groups.values()]


def _names(sources: list[TensorSource]) -> str:
    """The first few tensors' names, quoted, and how many more there are."""
    shown = ", ".join(f"'{source.key}'" for source in sources[:NAMES_SHOWN])
    return shown + (f" and {len(sources) - NAMES_SHOWN} more" if len(sources) > NAMES_SHOWN else "")


def _missing_error(
    model_key: str,
    expected: torch.Tensor,
    model_name: str,
    layout: KeyLayout,
    files: WeightFiles,
    unexpected: list[TensorSource],
) -> CheckpointError:
    """The error for a model tensor the checkpoint lacks, named as the checkpoint would."""
    key = layout.checkpoint_key(model_key)
    message = f"missing: {model_name} needs this tensor (shape {list(expected.shape)}"
    message += f", model key '{model_key}')" if key != model_key else ")"
    # The head leads its group only when it is not tied to the embedding.
    if model_key.startswith("lm_head."):
        message += "; tie_word_embeddings is false, so the head is not the embedding"
    if unexpected:
        message += f"; the checkpoint has tensors the model does not use: {_names(unexpected)}"
    return CheckpointError(message, path=str(files.expected_home()), key=key)


def _check_tensor(
    source: TensorSource, model_key: str, target: torch.Tensor, model_name: str
) -> None:
    """The checkpoint tensor fits the model tensor: same shape, convertible dtype."""
    entry = source.entry
    where = str(source.file)
    if entry.shape != tuple(target.shape):
        raise CheckpointError(
            f"found shape {list(entry.shape)}, but {model_name} expects "
            f"{list(target.shape)} for '{model_key}'",
            path=where,
            key=source.key,
        )
    if target.dtype.is_floating_point:
        if entry.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"stores {entry.dtype}, which cannot be represented losslessly in the model's "
                f"{target.dtype} (only floating-point tensors are converted to the model dtype)",
                path=where,
                key=source.key,
            )
        return
    if OTHER_DTYPES.get(entry.dtype, FLOAT_DTYPES.get(entry.dtype)) != target.dtype:
        raise CheckpointError(
            f"stores {entry.dtype}, but {model_name} holds '{model_key}' as {target.dtype}",
            path=where,
            key=source.key,
        )


def build_model(spec: ModelSpec, device: torch.device | None) -> Any:
    """``spec``'s model on ``device`` (None: the default device), parameters left uninitialised
    (every one is loaded afterwards), weights tied as its config says.

    ``_from_config`` is the constructor behind transformers' public ``from_config``: it builds
    under the model dtype as default dtype, which gives the non-persistent buffers (rotary
    frequencies, the embedding scale) the same values and dtypes as ``from_pretrained``."""
    from transformers.initialization import no_init_weights

    placement = device if device is not None else contextlib.nullcontext()
    with placement, no_init_weights():
        model = spec.model_class._from_config(
            spec.config, dtype=spec.dtype, attn_implementation=spec.attn_implementation
        )
    # no_init_weights also skips the tying post_init would do.
    model.tie_weights()
    return model


@contextlib.contextmanager
def _open_all(files: WeightFiles) -> Iterator[dict[Path, Any]]:
    """Every weight file opened read-only by safetensors (which checks the header again)."""
    from safetensors import SafetensorError, safe_open

    with contextlib.ExitStack() as stack:
        handles: dict[Path, Any] = {}
        for file in files.headers:
            try:
                handles[file] = stack.enter_context(safe_open(file, framework="pt", device="cpu"))
            except (SafetensorError, OSError) as error:
                raise CheckpointError(
                    f"safetensors cannot open it: {error}", path=str(file)
                ) from error
        yield handles


def _fill(model: torch.nn.Module, items: list[LoadItem], handles: dict[Path, Any]) -> None:
    """Copy every planned tensor into ``model``, converting to its dtype."""
    from safetensors import SafetensorError

    state = model.state_dict(keep_vars=True)

    def read(source: TensorSource) -> torch.Tensor:
        try:
            return handles[source.file].get_tensor(source.key)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"cannot read the tensor: {error}", path=str(source.file), key=source.key
            ) from error

    with torch.no_grad():
        for item in items:
            target = state[item.model_keys[0]]
            target.copy_(read(item.sources[0]))
            for other in item.sources[1:]:
                if not torch.equal(read(other).to(target.dtype), target):
                    raise CheckpointError(
                        f"differs from '{item.sources[0].key}', but the config ties the two "
                        "(set tie_word_embeddings to false in config.json if they are distinct)",
                        path=str(other.file),
                        key=other.key,
                    )
