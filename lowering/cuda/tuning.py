"""Kernel choices timed on a card and kept: tile sizes and pipeline depths per kernel family,
dtype and shape, read by the rules when they build a kernel.

A tuning table is JSON::

    {"format": "tessera-tuning", "version": 1, "arch": "sm_90a",
     "card": "NVIDIA H100 80GB HBM3", "date": "...", "commit": "...",
     "entries": {"wgmma/bf16/n16384/k2048/plain": {"block_m": 128, "block_n": 128, "stages": 4},
                 "gemv/bf16/n2048/k16384/plain/r1": {"cols": 1, "warps": 8, "unroll": 8,
                                                     "splits": 4}}}

``load(arch)`` reads the table shipped with the compiler (``tuning/<arch>.json``, made on an
H100 by ``bench/tune.py``) and lays over it the user's table for the same arch, if one exists:
``<arch>.json`` in the folder ``TESSERA_TUNING`` names, else in the compile cache's
``tuning`` folder (where ``bench/tune.py --install`` writes). A key the tables do not hold
keeps the rule's default.
The merged table's fingerprint is part of the CUDA target's, so a compile cached under one
table is not reused under another. A malformed table is an error that names the file and
the field, never a silent default.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tessera import knobs
from tessera.errors import LoweringError

FORMAT = "tessera-tuning"
VERSION = 1
SHIPPED = Path(__file__).parent / "tuning"
USER_ENV = "TESSERA_TUNING"


def user_table(arch: str) -> Path:
    """Where the user's table for ``arch`` is read from (and ``bench/tune.py`` installs):
    ``<arch>.json`` in ``knobs.tuning_dir()`` (``TESSERA_TUNING``, else ``tuning`` in the
    compile cache's folder)."""
    return knobs.tuning_dir() / f"{arch}.json"


@dataclass(frozen=True)
class Tuning:
    """The merged entries (key → parameter → int) and the files they came from."""

    entries: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def get(self, key: str) -> Mapping[str, int] | None:
        return self.entries.get(key)

    def fingerprint(self) -> str:
        text = json.dumps({k: dict(v) for k, v in self.entries.items()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def wgmma_key(dtype: str, n: int, k: int, gated: bool) -> str:
    """The key of the wgmma GEMM for w [n, k] (gated: the MLP's gate/up pair)."""
    return f"wgmma/{dtype}/n{n}/k{k}/{'gated' if gated else 'plain'}"


def gemv_key(dtype: str, n: int, k: int, gated: bool, rows: int) -> str:
    """The key of the decode GEMV for w [n, k] and ``rows`` rows of x a block (its row
    class): its entry names the tile's ``cols``, ``warps``, ``unroll`` and ``splits``."""
    return f"gemv/{dtype}/n{n}/k{k}/{'gated' if gated else 'plain'}/r{rows}"


def load(arch: str) -> Tuning:
    """The shipped table for ``arch`` overlaid by the user's (either may be absent)."""
    entries: dict[str, Mapping[str, int]] = {}
    sources = []
    for path in (SHIPPED / f"{arch}.json", user_table(arch)):
        if path.is_file():
            entries.update(read(path, arch))
            sources.append(str(path))
    return Tuning(entries, tuple(sources))


def read(path: Path, arch: str) -> dict[str, Mapping[str, int]]:
    """The entries of the table at ``path``, checked: format, version, arch, and every entry
    a mapping of parameter names to positive integers."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LoweringError(f"tuning table {path}: cannot be read: {error}") from None

    def fail(field_: str, problem: str) -> LoweringError:
        return LoweringError(f"tuning table {path}: {field_}: {problem}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise fail("format", f"expected '{FORMAT}'")
    if data.get("version") != VERSION:
        raise fail("version", f"expected {VERSION}, found {data.get('version')!r}")
    if data.get("arch") != arch:
        raise fail("arch", f"the table is for {data.get('arch')!r}, the compile for {arch!r}")
    raw = data.get("entries")
    if not isinstance(raw, dict):
        raise fail("entries", "expected an object")
    entries: dict[str, Mapping[str, int]] = {}
    for key, params in raw.items():
        if not isinstance(params, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in params.values()
        ):
            raise fail(f"entries.{key}", "expected parameter names mapped to positive integers")
        entries[key] = dict(params)
    return entries


def table_json(
    arch: str, card: str, date: str, commit: str, entries: Mapping[str, Mapping[str, int]]
) -> str:
    """A table as ``load`` reads it."""
    body = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "card": card,
        "date": date,
        "commit": commit,
        "entries": {k: dict(v) for k, v in sorted(entries.items())},
    }
    return json.dumps(body, indent=1) + "\n"
