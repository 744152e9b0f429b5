"""Find a Hugging Face checkpoint's safetensors files and validate their headers.

A checkpoint holds either one ``model.safetensors`` or shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor name: shard file name}}``); like
transformers, the single file wins when both exist. Pickle-based weights (``.bin``, ``.pt``,
``.ckpt``) are never opened: unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tessera.errors import CheckpointError

from .safetensors_header import TensorEntry, read_safetensors_header

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class WeightFiles:
    """A checkpoint's safetensors files, each with its validated header."""

    headers: dict[Path, dict[str, TensorEntry]]
    location: dict[str, Path]  # tensor name -> the file that holds it
    index: Path | None  # the shard index, for sharded checkpoints

    def expected_home(self) -> Path:
        """The file a tensor absent from the checkpoint would have been listed in."""
        return self.index if self.index is not None else next(iter(self.headers))


def find_weight_files(directory: Path) -> WeightFiles:
    """The safetensors files of the checkpoint in ``directory``, headers validated."""
    single = directory / SINGLE_FILE
    if single.is_file():
        header = read_safetensors_header(single)
        return WeightFiles({single: header}, dict.fromkeys(header, single), None)
    index = directory / INDEX_FILE
    if index.is_file():
        return _read_sharded(directory, index)
    raise CheckpointError(_no_weights_message(directory), path=str(directory))


def _no_weights_message(directory: Path) -> str:
    """Why the directory has no weights we load, naming what it does hold."""
    names = sorted(entry.name for entry in directory.iterdir())
    pickled = [name for name in names if name.endswith(PICKLE_SUFFIXES)]
    message = f"has neither {SINGLE_FILE} nor {INDEX_FILE}"
    if pickled:
        return (
            f"{message}; found {', '.join(pickled)}, which is pickle-based and never loaded "
            "(unpickling can run arbitrary code): only safetensors weights are supported; "
            "convert the checkpoint to safetensors"
        )
    other = [name for name in names if name.endswith(".safetensors")]
    if other:
        return f"{message}; found {', '.join(other)}, which is not a Hugging Face weight file name"
    return f"{message} (only safetensors weights are supported)"


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
    headers = {directory / name: read_safetensors_header(directory / name) for name in shard_names}
    location: dict[str, Path] = {}
    for shard, header in headers.items():
        for key in header:
            if key in location:
                raise CheckpointError(
                    f"is stored in both {location[key].name} and {shard.name}",
                    path=where,
                    key=key,
                )
            listed = weight_map.get(key)
            if listed != shard.name:
                found = f"lists it in {listed}" if listed else "does not list it"
                raise CheckpointError(
                    f"shard {shard.name} holds this tensor, but the index {found}",
                    path=where,
                    key=key,
                )
            location[key] = shard
    for key, name in weight_map.items():
        if key not in location:
            raise CheckpointError(
                f"the index lists this tensor in {name}, which does not hold it",
                path=str(directory / name),
                key=key,
            )
    return WeightFiles(headers, location, index)


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
