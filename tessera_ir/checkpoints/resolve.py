"""Where a checkpoint is: what ``from_pretrained`` accepts, without network access.

A checkpoint is named by a local folder, or by a Hugging Face Hub id (``google/gemma-2-2b``) that
is looked up in the local Hugging Face cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``). Nothing is ever downloaded: an id absent from the cache is an error
naming the id and the cache folder, so that the user can fetch it with their own tools.
"""

from __future__ import annotations

import os
from pathlib import Path

from tessera.errors import CheckpointError


def resolve_checkpoint(
    source: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The folder holding the checkpoint ``source``: ``source`` itself when it is a local folder
    (or a gemma_pytorch ``.ckpt`` file's folder), else the cached snapshot of the Hub id
    ``source`` (only a ``str`` can be an id) in ``cache_dir`` (default: huggingface_hub's cache
    folder)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.is_file():
        if path.suffix == ".ckpt":
            return path.parent
        raise CheckpointError(
            "is a file; expected a checkpoint folder (config.json with safetensors weights or a "
            "gemma_pytorch .ckpt), or a Hugging Face Hub id",
            path=str(path),
        )
    if not isinstance(source, str) or not _is_hub_id(source):
        raise CheckpointError(
            "does not exist (expected a checkpoint folder or a Hugging Face Hub id such as "
            "'google/gemma-2-2b')",
            path=str(path),
        )
    return _cached_snapshot(source, cache_dir)


def _is_hub_id(name: str) -> bool:
    """``name`` is shaped like a Hub repository id (``name`` or ``owner/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached_snapshot(repo_id: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The snapshot folder of ``repo_id``'s main revision in the local cache."""
    from huggingface_hub import constants, snapshot_download

    # Read at call time: huggingface_hub fixes its default when it is imported.
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    try:
        snapshot = snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
    # LocalEntryNotFoundError (a FileNotFoundError) when the id has no cached snapshot.
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"is neither a local folder nor a Hugging Face Hub id in the local cache {cache} "
            "(checkpoints are never downloaded: fetch it first, e.g. with "
            f"`hf download {repo_id}`, or pass the folder that holds it)",
            path=repo_id,
        ) from error
    return Path(snapshot)
