"""Find a checkpoint's weight files, describe their tensors without reading them, and read them.

A Hugging Face checkpoint holds either one ``model.safetensors`` or shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor name: shard file name}}``); like
transformers, the single file wins when both exist. The safetensors library opens each file and
validates its header (a truncated file, overlapping or mis-sized tensors are refused); what is
checked here is what it cannot know: that the index and the shards agree, that no tensor is in
two shards and that no shard lies outside the folder. Its errors are rewrapped to name the file.

A gemma_pytorch checkpoint is one ``.ckpt`` (``gemma_pytorch.py``). Other pickle-based weights
(``.bin``, ``.pt``, ...) are never opened.

Tensors are read with safetensors' ``pread`` backend: each read copies one tensor from the file
into memory of its own, so streaming a checkpoint never keeps more than the tensor in hand. (The
default memory-mapped backend keeps every page it has read resident, and counted against the
process, until the file is closed.)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tessera.errors import CheckpointError

from .gemma_pytorch import describe_ckpt, open_ckpt
from .stored import ReadTensor, StoredTensor

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CKPT_SUFFIX = ".ckpt"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")


@dataclass(frozen=True)
class WeightFiles:
    """A checkpoint's weight files and every tensor they hold."""

    format: str  # "safetensors" or "gemma_pytorch"
    files: tuple[Path, ...]
    tensors: dict[str, StoredTensor]  # by checkpoint name
    index: Path | None  # the shard index, for sharded checkpoints

    def expected_home(self) -> Path:
        """The file a tensor absent from the checkpoint would have been listed in."""
        return self.index if self.index is not None else self.files[0]

    @contextlib.contextmanager
    def reader(self) -> Iterator[ReadTensor]:
        """A function reading one tensor at a time, valid inside the ``with`` block."""
        if self.format == "gemma_pytorch":
            with open_ckpt(self.files[0]) as read:
                yield read
            return
        with contextlib.ExitStack() as stack:
            handles: dict[Path, Any] = {}

            def read(stored: StoredTensor) -> torch.Tensor:
                if stored.file not in handles:
                    handles[stored.file] = stack.enter_context(_safe_open(stored.file))
                return _read_safetensors(handles[stored.file], stored)

            yield read


def find_weight_files(directory: Path) -> WeightFiles:
    """The weight files of the checkpoint in ``directory``, every tensor described."""
    single = directory / SINGLE_FILE
    if single.is_file():
        return WeightFiles("safetensors", (single,), _describe(single), None)
    index = directory / INDEX_FILE
    if index.is_file():
        return _read_sharded(directory, index)
    ckpts = sorted(path for path in directory.glob(f"*{CKPT_SUFFIX}") if path.is_file())
    if len(ckpts) == 1:
        return WeightFiles("gemma_pytorch", (ckpts[0],), describe_ckpt(ckpts[0]), None)
    if ckpts:
        raise CheckpointError(
            f"holds {len(ckpts)} gemma_pytorch checkpoints ({', '.join(p.name for p in ckpts)}); "
            "keep one per folder",
            path=str(directory),
        )
    raise CheckpointError(_no_weights_message(directory), path=str(directory))


def _no_weights_message(directory: Path) -> str:
    """Why the directory has no weights we load, naming what it does hold."""
    names = sorted(entry.name for entry in directory.iterdir())
    pickled = [name for name in names if name.endswith(PICKLE_SUFFIXES)]
    message = f"has neither {SINGLE_FILE} nor {INDEX_FILE} nor a gemma_pytorch *{CKPT_SUFFIX}"
    if pickled:
        return (
            f"{message}; found {', '.join(pickled)}, which is pickle-based and never loaded "
            "(unpickling can run arbitrary code): only safetensors weights and gemma_pytorch "
            ".ckpt files are supported; convert the checkpoint to safetensors"
        )
    other = [name for name in names if name.endswith(".safetensors")]
    if other:
        return f"{message}; found {', '.join(other)}, which is not a Hugging Face weight file name"
    return message


@contextlib.contextmanager
def _safe_open(path: Path) -> Iterator[Any]:
    """``path`` opened by safetensors (header validated), its errors naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(path, framework="pt", device="cpu", backend="pread")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"safetensors rejects the file (truncated, corrupt or not a safetensors file): {error}",
            path=str(path),
        ) from error
    with handle:
        yield handle


def _describe(path: Path) -> dict[str, StoredTensor]:
    """Every tensor of one safetensors file, from its (validated) header."""
    with _safe_open(path) as handle:
        described: dict[str, StoredTensor] = {}
        for key in handle.keys():
            view = handle.get_slice(key)
            described[key] = StoredTensor(key, path, view.get_dtype(), tuple(view.get_shape()))
        return described


def _read_safetensors(handle: Any, stored: StoredTensor) -> torch.Tensor:
    """One tensor of an open safetensors file."""
    from safetensors import SafetensorError

    try:
        return handle.get_tensor(stored.key)
    # A file changed since it was described, or a dtype torch has no type for.
    except (SafetensorError, OSError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"cannot read the tensor: {error}", path=str(stored.file), key=stored.key
        ) from error


def _read_sharded(directory: Path, index: Path) -> WeightFiles:
    """Shards named by the index, every one present, agreeing with the index key for key."""
    weight_map = _read_weight_map(index)
    where = str(index)
    shard_names = sorted(set(weight_map.values()))
    missing = [name for name in shard_names if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"names shard(s) that do not exist: {', '.join(missing)} "
            f"({len(shard_names)} shards listed)",
            path=where,
        )
    tensors: dict[str, StoredTensor] = {}
    described = [_describe(directory / name) for name in shard_names]
    # A tensor in two shards first: which one the index names says nothing about the other.
    for shard in described:
        for key, stored in shard.items():
            if key in tensors:
                raise CheckpointError(
                    f"is stored in both {tensors[key].file.name} and {stored.file.name}",
                    path=where,
                    key=key,
                )
            tensors[key] = stored
    for key, stored in tensors.items():
        listed = weight_map.get(key)
        if listed != stored.file.name:
            found = f"lists it in {listed}" if listed else "does not list it"
            raise CheckpointError(
                f"shard {stored.file.name} holds this tensor, but the index {found}",
                path=where,
                key=key,
            )
    for key, name in weight_map.items():
        if key not in tensors:
            raise CheckpointError(
                f"the index lists this tensor in {name}, which does not hold it",
                path=str(directory / name),
                key=key,
            )
    return WeightFiles(
        "safetensors", tuple(directory / name for name in shard_names), tensors, index
    )


def _read_weight_map(index: Path) -> dict[str, str]:
    """The index's weight_map, whose shard names are plain file names in the directory."""
    where = str(index)
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read the file: {error}", path=where) from error
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})", path=where
        ) from error
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(name, str) for key, name in weight_map.items()
    ):
        raise CheckpointError(
            "has no weight_map object mapping tensor names to shard file names", path=where
        )
    for key, name in weight_map.items():
        # A shard must be a file of this directory: a crafted index must not make us read
        # elsewhere.
        if Path(name).name != name or name in ("", ".", "..") or "\\" in name:
            raise CheckpointError(
                f"shard name {name!r} is not a plain file name in the checkpoint directory",
                path=where,
                key=key,
            )
    return weight_map
