"""Finding a compiled model in the cache without tracing the module again.

The cache is keyed by the traced IR (``api.compile``), which costs a trace to know. An *alias*
maps a key made from the module's fingerprint (``module_key.module_fingerprint``: class
sources, config, parameter shapes, buffer values) and the compile's other inputs to the IR key
of the entry an earlier trace built. A compile whose alias is known loads that entry and binds
the module's own tensors by the names the artifact lists, in a fraction of a second. A stale or
broken alias is ignored (the compile traces as usual and writes it afresh).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

ALIASES = "aliases"
_KEY = re.compile(r"[0-9a-f]{16,64}")


def _path(root: Path, alias: str) -> Path:
    return root / ALIASES / f"{alias}.json"


def read_alias(root: Path, alias: str) -> str | None:
    """The IR key ``alias`` names, or None (no alias, or one that is unreadable)."""
    try:
        data = json.loads(_path(root, alias).read_text())
    except (OSError, ValueError):
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) and _KEY.fullmatch(key) else None


def write_alias(root: Path, alias: str, key: str) -> None:
    """Records that ``alias`` names ``key``; written to a temporary file and renamed into
    place, so a reader never sees half of it. A cache that cannot be written is left as is."""
    folder = root / ALIASES
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".alias-", suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump({"key": key}, stream)
        os.replace(temporary, _path(root, alias))
    except OSError:
        return
