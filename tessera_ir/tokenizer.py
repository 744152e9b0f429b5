"""The tokenizer that ships with a checkpoint, loaded by transformers' AutoTokenizer.

A Gemma checkpoint folder holds ``tokenizer.json`` (the ``tokenizers`` library's format) and/or
``tokenizer.model`` (a SentencePiece model, which transformers converts with the ``sentencepiece``
and ``protobuf`` packages). Folders and Hub ids are resolved as for the weights
(``tessera.checkpoints.resolve_checkpoint``): nothing is downloaded or written.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from tessera.checkpoints import resolve_checkpoint
from tessera.errors import CheckpointError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"
# What reading a SentencePiece model through transformers needs.
SENTENCEPIECE_PACKAGES = ("sentencepiece", "google.protobuf")


def load_tokenizer(source: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The tokenizer of the checkpoint ``source`` (a folder, or a Hub id in the local cache).

    Raises CheckpointError naming the folder when it has no tokenizer, or when transformers
    cannot load the one it has."""
    directory = resolve_checkpoint(source)
    where = str(directory)
    has_json = (directory / TOKENIZER_JSON).is_file()
    has_model = (directory / SENTENCEPIECE_MODEL).is_file()
    if not has_json and not has_model:
        raise CheckpointError(
            f"has no tokenizer: neither {TOKENIZER_JSON} nor {SENTENCEPIECE_MODEL} (copy the "
            "tokenizer files of the model next to its weights)",
            path=where,
        )
    if not has_json:
        # Without them transformers falls back to reading the file as a tiktoken vocabulary and
        # fails with a message about tiktoken.
        absent = [name for name in SENTENCEPIECE_PACKAGES if not _importable(name)]
        if absent:
            raise CheckpointError(
                f"holds only {SENTENCEPIECE_MODEL}, and reading it needs the "
                f"{' and '.join(absent)} package(s) (pip install sentencepiece protobuf)",
                path=where,
            )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    # Tokenizer loading raises OSError, ValueError, KeyError and the tokenizers library's own
    # Exception subclasses for files it cannot parse, so the boundary is broad.
    except Exception as error:
        first = str(error).strip().split("\n\n")[0]
        raise CheckpointError(
            f"transformers' AutoTokenizer cannot load its tokenizer: {first}", path=where
        ) from error


def _importable(module: str) -> bool:
    """``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package of a dotted name is absent
        return False
