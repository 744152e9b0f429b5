"""Open a Gemma checkpoint folder, check it against the model it describes, and stream its weights.

Everything is checked before any tensor is read: config.json, the file set, every file's header,
and every tensor's name, shape and dtype against the model's state dict, taken from a skeleton of
the model whose parameters live on the meta device (they cost no memory; buffers derived from the
config, such as the rotary frequencies, are real). So a bad checkpoint fails fast and a load never
stops half way.

Weights then go from the file to their destination one tensor at a time: ``load_hf_checkpoint``
puts each into the model as it is read, ``Checkpoint.weights`` reads each when it is looked up
(``tessera.compile`` binds a compiled model's weights through it), and ``model_for_tracing`` gives
a model whose parameters are shape-only stand-ins, so tracing reads no weights at all.

Files are only ever opened for reading; nothing is written into the checkpoint folder.

Dtypes: tensors stored in any floating-point dtype (F64, F32, F16, BF16, F8_E4M3, F8_E5M2) are
converted to the model's dtype with torch's round-to-nearest-even (as transformers does when
asked for a dtype); choosing the dtype is choosing that rounding. Integer, bool, complex and
quantisation-only dtypes are never converted to floats: such a tensor is an error.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tessera.errors import CheckpointError
from tessera.log import track

from .hf_config import CONFIG_NAME, ModelSpec, read_model_spec
from .hf_files import WeightFiles, find_weight_files
from .hf_layout import GEMMA_PYTORCH_LAYOUT, KeyLayout, detect_layout
from .resolve import resolve_checkpoint
from .stored import FLOAT_DTYPES, TORCH_DTYPES, ReadTensor, StoredTensor, dtype_name

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel

GENERATION_CONFIG_NAME = "generation_config.json"

# How many unexpected tensor names an error lists before summarising.
NAMES_SHOWN = 5


@dataclass(frozen=True)
class Part:
    """A checkpoint tensor, or the dim-0 rows ``[begin, end)`` of a fused one, that fills a
    model tensor."""

    stored: StoredTensor
    rows: tuple[int, int] | None = None


@dataclass(frozen=True)
class LoadItem:
    """One model tensor (several keys when weights are tied) and the checkpoint tensors that
    fill it: the first is loaded, any others must hold the same values."""

    model_keys: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    sources: tuple[Part, ...]


class Checkpoint:
    """An opened and fully checked checkpoint; no tensor has been read yet."""

    def __init__(
        self,
        directory: Path,
        spec: ModelSpec,
        files: WeightFiles,
        layout: KeyLayout,
        items: list[LoadItem],
        generation_config: GenerationConfig | None = None,
    ) -> None:
        self.directory = directory
        self.spec = spec
        self.files = files
        self.layout = layout
        self.items = items
        # The folder's generation_config.json, None when it has none.
        self.generation_config = generation_config

    def model_for_tracing(self) -> PreTrainedModel:
        """The model with every parameter a shape-only stand-in (one zero broadcast to the
        parameter's shape: a CPU tensor with one element of storage), in eval mode. It traces
        like the loaded model (same shapes, dtypes and derived buffers), but computes nothing
        meaningful; the weights come from ``weights()``."""
        model = self._skeleton()
        stand_ins: dict[int, torch.nn.Parameter] = {}
        for module in model.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is None:
                    continue
                # Tied parameters are one object; their stand-in is one object too.
                if id(parameter) not in stand_ins:
                    zero = torch.zeros((), dtype=parameter.dtype).expand(parameter.shape)
                    stand_ins[id(parameter)] = torch.nn.Parameter(zero, requires_grad=False)
                module._parameters[name] = stand_ins[id(parameter)]
        return model.eval()

    def tensors(
        self, device: torch.device | str | None = None
    ) -> Iterator[tuple[LoadItem, torch.Tensor]]:
        """Every model tensor, read one at a time, converted to the model dtype and placed on
        ``device`` (default: the CPU). Only the tensor in hand is held."""
        # A bar on a terminal: a real checkpoint's weights take a while to read.
        items = track(self.items, "loading weights", unit="tensor")
        if self.files.format == "gemma_pytorch":
            # A .ckpt reader maps the whole file, and every page read stays resident until the
            # mapping closes: one reader per tensor releases them as loading goes.
            for item in items:
                with self.files.reader() as read:
                    tensor = self._materialize(item, read, device)
                yield item, tensor
            return
        with self.files.reader() as read:
            for item in items:
                yield item, self._materialize(item, read, device)

    def weights(self, device: torch.device | str | None = None) -> CheckpointWeights:
        """The model tensors by state-dict key, each read from the checkpoint when looked up
        (nothing is cached: the caller keeps what it needs)."""
        return CheckpointWeights(self, device)

    def load(self, device: torch.device | str | None = None) -> PreTrainedModel:
        """The model with every weight read into it, on ``device`` (default: the CPU)."""
        model = self._skeleton()
        for item, tensor in self.tensors(device):
            parameter: torch.nn.Parameter | None = None
            for key in item.model_keys:
                module_path, _, name = key.rpartition(".")
                module = model.get_submodule(module_path)
                if name in module._parameters:
                    old = module._parameters[name]
                    # Tied keys share one Parameter, as in the model transformers builds.
                    if parameter is None:
                        parameter = torch.nn.Parameter(
                            tensor, requires_grad=bool(old is not None and old.requires_grad)
                        )
                    module._parameters[name] = parameter
                else:
                    module._buffers[name] = tensor
        # (The plan covers every state-dict key, so no parameter is left on the meta device.)
        if device is not None:
            model.to(device)  # the derived buffers
        return model.eval()

    def _skeleton(self) -> Any:
        """``build_skeleton``, with the folder's generation defaults as ``from_pretrained``
        gives them (Gemma's generation_config.json names more end tokens than config.json)."""
        model = build_skeleton(self.spec)
        if self.generation_config is not None:
            model.generation_config = copy.deepcopy(self.generation_config)
        return model

    def _materialize(
        self, item: LoadItem, read: ReadTensor, device: torch.device | str | None
    ) -> torch.Tensor:
        """``item``'s tensor: its first source read and converted; any further source (a head
        stored next to the embedding it is tied to) must hold the same values."""
        tensor = self._read_part(item.sources[0], read, item.dtype, device)
        for other in item.sources[1:]:
            if not torch.equal(self._read_part(other, read, item.dtype, device), tensor):
                raise CheckpointError(
                    f"differs from '{item.sources[0].stored.key}', but the config ties the two "
                    "(set tie_word_embeddings to false in config.json if they are distinct)",
                    path=str(other.stored.file),
                    key=other.stored.key,
                )
        return tensor

    def _read_part(
        self,
        part: Part,
        read: ReadTensor,
        dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> torch.Tensor:
        stored = part.stored
        tensor = read(stored)
        found = (dtype_name(tensor.dtype), tuple(tensor.shape))
        if found != (stored.dtype, stored.shape):
            raise CheckpointError(
                f"changed since the checkpoint was opened: it was {stored.dtype}"
                f"{list(stored.shape)}, it is {found[0]}{list(found[1])}",
                path=str(stored.file),
                key=stored.key,
            )
        if part.rows is not None:
            tensor = tensor[part.rows[0] : part.rows[1]]
        # A .ckpt tensor and a row slice are views (of the file mapping, of the fused tensor):
        # copied, so that the result owns exactly its own memory. A safetensors read already does.
        copy = part.rows is not None or self.files.format != "safetensors"
        return tensor.to(device=device, dtype=dtype, copy=copy)


class CheckpointWeights(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors by model key, each read from its file when looked up."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device | str | None) -> None:
        self._checkpoint = checkpoint
        self._device = device
        self._items = {key: item for item in checkpoint.items for key in item.model_keys}

    def __getitem__(self, key: str) -> torch.Tensor:
        item = self._items[key]
        with self._checkpoint.files.reader() as read:
            return self._checkpoint._materialize(item, read, self._device)

    # Mapping's own __contains__ would read the tensor to answer.
    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def open_checkpoint(
    path: str | os.PathLike[str], dtype: torch.dtype | str | None = None
) -> Checkpoint:
    """The checkpoint at ``path`` (a folder, a Hub id in the local cache: ``resolve_checkpoint``)
    with its config read and every tensor checked against the model, in ``dtype`` (a floating
    torch.dtype or its name; default: the config's, float32 when it names none). Raises
    CheckpointError naming the file and tensor at fault."""
    directory = resolve_checkpoint(path)
    spec = read_model_spec(directory, dtype)
    files = find_weight_files(directory)
    if files.format == "gemma_pytorch":
        layout = GEMMA_PYTORCH_LAYOUT
    else:
        layout = detect_layout(spec.multimodal, files.tensors, str(files.expected_home()))
    try:
        skeleton = build_skeleton(spec)
    # A config transformers accepted can still fail the model's constructor, in any way.
    except Exception as error:
        raise CheckpointError(
            f"cannot build {spec.model_class.__name__} from this config: {error}",
            path=str(directory / CONFIG_NAME),
        ) from error
    items = plan_load(skeleton, layout, files)
    return Checkpoint(directory, spec, files, layout, items, _generation_config(directory))


def _generation_config(directory: Path) -> GenerationConfig | None:
    """The folder's generation_config.json read by transformers, None when there is none."""
    path = directory / GENERATION_CONFIG_NAME
    if not path.is_file():
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(directory, local_files_only=True)
    # OSError for a file that is not JSON, ValueError for values it rejects, and others from
    # its validation: the boundary is broad.
    except Exception as error:
        first = str(error).strip().split("\n\n")[0]
        raise CheckpointError(
            f"transformers' GenerationConfig cannot read it: {first}", path=str(path)
        ) from error


def load_hf_checkpoint(
    path: str | os.PathLike[str],
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> PreTrainedModel:
    """The transformers Gemma/Gemma2/Gemma3ForCausalLM held in the checkpoint at ``path`` (a
    Hugging Face folder with config.json and safetensors weights, a folder with config.json and
    a gemma_pytorch ``.ckpt``, or a Hub id in the local cache), in eval mode, its weights on
    ``device`` (default: the CPU).

    ``dtype`` (a floating torch.dtype or its name) overrides the config's dtype (float32 when the
    config names none). A multimodal Gemma 3 checkpoint gives its text model. Raises
    CheckpointError naming the file and tensor at fault."""
    return open_checkpoint(path, dtype).load(device)


def plan_load(model: torch.nn.Module, layout: KeyLayout, files: WeightFiles) -> list[LoadItem]:
    """Match the checkpoint's tensors to ``model``'s state dict: every model tensor found once
    (tied keys share one), with the right shape and a dtype that converts; no tensor left
    over. Reads headers only."""
    expected = model.state_dict(keep_vars=True)
    model_name = type(model).__name__
    available: dict[str, Part] = {}
    unexpected: list[StoredTensor] = []
    for key, stored in files.tensors.items():
        if layout.ignores(key):
            continue
        model_keys = layout.model_keys(key)
        if model_keys is None or any(model_key not in expected for model_key in model_keys):
            unexpected.append(stored)
        elif len(model_keys) == 1:
            available[model_keys[0]] = Part(stored)
        else:
            available.update(_split_fused(stored, model_keys, expected, model_name))

    items: list[LoadItem] = []
    for keys in _tied_groups(expected):
        present = [key for key in keys if key in available]
        if not present:
            raise _missing_error(keys[0], expected[keys[0]], model_name, layout, files, unexpected)
        for key in present:
            _check_tensor(available[key], key, expected[key], model_name)
        target = expected[keys[0]]
        items.append(
            LoadItem(
                keys, tuple(target.shape), target.dtype, tuple(available[key] for key in present)
            )
        )

    if unexpected:
        first = unexpected[0]
        raise CheckpointError(
            f"the checkpoint holds {len(unexpected)} tensor(s) that {model_name} does not "
            f"have: {_names(unexpected)}",
            path=str(first.file),
            key=first.key,
        )
    return items


def _split_fused(
    stored: StoredTensor,
    model_keys: tuple[str, ...],
    expected: dict[str, torch.Tensor],
    model_name: str,
) -> dict[str, Part]:
    """The parts of a fused tensor (q, k and v stacked along dim 0), sized by the model."""
    shapes = [tuple(expected[key].shape) for key in model_keys]
    rows = sum(shape[0] for shape in shapes)
    trailing = {shape[1:] for shape in shapes}
    if len(trailing) != 1 or stored.shape != (rows, *shapes[0][1:]):
        pieces = " + ".join(
            f"{key.rpartition('.')[0].rpartition('.')[2]} {list(shape)}"
            for key, shape in zip(model_keys, shapes, strict=True)
        )
        raise CheckpointError(
            f"found shape {list(stored.shape)}, but {model_name} expects "
            f"{[rows, *shapes[0][1:]]} (its {pieces}, stacked)",
            path=str(stored.file),
            key=stored.key,
        )
    parts: dict[str, Part] = {}
    begin = 0
    for key, shape in zip(model_keys, shapes, strict=True):
        parts[key] = Part(stored, (begin, begin + shape[0]))
        begin += shape[0]
    return parts


def _tied_groups(state: dict[str, torch.Tensor]) -> list[tuple[str, ...]]:
    """State-dict keys grouped by the tensor they name (tied weights are one tensor)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)
    return [tuple(keys) for keys in groups.values()]


def _names(stored: list[StoredTensor]) -> str:
    """The first few tensors' names, quoted, and how many more there are."""
    shown = ", ".join(f"'{item.key}'" for item in stored[:NAMES_SHOWN])
    return shown + (f" and {len(stored) - NAMES_SHOWN} more" if len(stored) > NAMES_SHOWN else "")


def _missing_error(
    model_key: str,
    expected: torch.Tensor,
    model_name: str,
    layout: KeyLayout,
    files: WeightFiles,
    unexpected: list[StoredTensor],
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


def _check_tensor(part: Part, model_key: str, target: torch.Tensor, model_name: str) -> None:
    """The checkpoint tensor fits the model tensor: same shape, convertible dtype."""
    stored = part.stored
    where = str(stored.file)
    if part.rows is None and stored.shape != tuple(target.shape):
        raise CheckpointError(
            f"found shape {list(stored.shape)}, but {model_name} expects "
            f"{list(target.shape)} for '{model_key}'",
            path=where,
            key=stored.key,
        )
    if target.dtype.is_floating_point:
        if stored.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"stores {stored.dtype}, which cannot be represented losslessly in the model's "
                f"{target.dtype} (only floating-point tensors are converted to the model dtype)",
                path=where,
                key=stored.key,
            )
        return
    if TORCH_DTYPES.get(stored.dtype) != target.dtype:
        raise CheckpointError(
            f"stores {stored.dtype}, but {model_name} holds '{model_key}' as {target.dtype}",
            path=where,
            key=stored.key,
        )


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside the block is moved to the meta device as it is
    registered; buffers stay where they are created. Building under ``torch.device("meta")``
    instead would leave the buffers the model derives from its config (rotary frequencies, the
    embedding scale) without values, and tracing folds them into the IR as constants.

    A parameter is created (uninitialised, never written: its memory is not touched) before it is
    registered, then released. Patches ``torch.nn.Module.register_parameter`` while the block
    runs, so models must not be built concurrently in other threads meanwhile."""
    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, parameter: torch.nn.Parameter | None) -> None:
        original(module, name, parameter)
        if parameter is not None and not parameter.is_meta:
            module._parameters[name] = torch.nn.Parameter(
                parameter.to("meta"), requires_grad=parameter.requires_grad
            )

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


def build_skeleton(spec: ModelSpec) -> Any:
    """``spec``'s model with its parameters on the meta device and its derived buffers real,
    weights tied as its config says.

    ``_from_config`` is the constructor behind transformers' public ``from_config``: it builds
    under the model dtype as default dtype, which gives the non-persistent buffers (rotary
    frequencies, the embedding scale) the same values and dtypes as ``from_pretrained``.
    Initialisation runs on meta tensors, where it computes nothing."""
    with _parameters_on_meta():
        model = spec.model_class._from_config(
            spec.config, dtype=spec.dtype, attn_implementation=spec.attn_implementation
        )
    model.tie_weights()
    return model
