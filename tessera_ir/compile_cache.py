"""The on-disk compile cache: one folder per key, published atomically.

An entry is built in a private temporary folder next to the cache and renamed into place, so
a reader sees a complete entry or none. A corrupt entry (a binary that fails its checksum, a
missing file) is detected by the caller when it loads, discarded here and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_key(parts: dict[str, Any]) -> str:
    """A stable key over everything that decides the compiled code."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class CompileCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> Path | None:
        path = self.entry(key)
        return path if path.is_dir() else None

    def discard(self, key: str) -> None:
        """Removes an entry (moved aside first, so a concurrent reader never sees half of it)."""
        path = self.entry(key)
        if not path.exists():
            return
        trash = self.root / f".trash-{key}-{uuid.uuid4().hex}"
        try:
            path.rename(trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def store(self, key: str, build: Callable[[Path], None]) -> Path:
        """Runs ``build`` into a fresh folder and publishes it as the entry for ``key``."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{key}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            build(staging)
            final = self.entry(key)
            try:
                os.rename(staging, final)
            except OSError:
                # Another process published the same key first; its entry is as good as ours.
                if not final.is_dir():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
            return final
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
