"""``tessera cache list`` and ``tessera cache clear``: what the compile cache holds, and freeing it.

The cache is the folder ``TESSERA_CACHE_DIR`` names (default: the user cache folder);
``tessera.compile_cache`` describes its layout.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import TYPE_CHECKING

from . import knobs

if TYPE_CHECKING:
    from .compile_cache import CompileCache, EntryInfo

# --older-than's units, in seconds.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="list or clear the compile cache",
        description="List or clear the compile cache (TESSERA_CACHE_DIR; default: the user "
        "cache folder).",
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="every entry: key, size, when built and last used, model, target",
        description="List every cache entry, the most recently used first.",
    )
    listing.set_defaults(run=run_list)
    clearing = actions.add_parser(
        "clear",
        help="delete every entry, those unused for a while, or one",
        description="Delete cache entries (all of them unless a choice below narrows it), and "
        "whatever killed compiles left behind. A compile running meanwhile is unaffected.",
    )
    which = clearing.add_mutually_exclusive_group()
    which.add_argument(
        "--older-than",
        type=duration,
        metavar="AGE",
        help="only entries unused for AGE: a number and a unit, s, m, h, d or w (e.g. 7d)",
    )
    which.add_argument("--key", help="only this entry (its key, or the start of it)")
    clearing.set_defaults(run=run_clear)


def duration(text: str) -> float:
    """Seconds in ``text``: a number and a unit (``90s``, ``30m``, ``12h``, ``7d``, ``2w``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an age: write a number and a unit, s, m, h, d or w (e.g. 7d)"
        )
    return float(match[1]) * _UNITS[match[2]]


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")


def human_age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _cache() -> CompileCache:
    # Imported here: it sets the logger up, which `tessera.cli.main` reports errors of.
    from .compile_cache import CompileCache

    return CompileCache(knobs.cache_dir())


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def run_list(args: argparse.Namespace) -> int:
    cache = _cache()
    entries = cache.entries()
    running = cache.builds_in_progress()
    total = sum(info.size for info in entries)
    summary = f"{cache.root}: {_entries(len(entries))}, {human_size(total)}"
    if running:
        summary += f"; {running} build(s) in progress or abandoned"
    print(summary)
    if not entries:
        return 0
    now = time.time()
    rows = [("KEY", "SIZE", "BUILT", "USED", "TARGET", "MODEL")]
    rows += [
        (
            info.key,
            human_size(info.size),
            human_age(now - info.built),
            human_age(now - info.used),
            info.target,
            info.model,
        )
        for info in entries
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0


def run_clear(args: argparse.Namespace) -> int:
    cache = _cache()
    if not cache.root.is_dir():
        print(f"{cache.root}: no cache here, nothing to clear")
        return 0
    key = cache.find(args.key) if args.key is not None else None
    removed: list[EntryInfo] = cache.clear(older_than=args.older_than, key=key)
    freed = sum(info.size for info in removed)
    print(f"{cache.root}: deleted {_entries(len(removed))}, {human_size(freed)} freed")
    return 0
