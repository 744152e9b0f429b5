"""Every environment variable Tessera reads, in one place (the only reader of ``os.environ``).

| variable | effect |
|---|---|
| TESSERA_DEBUG | CLIs print Python tracebacks for internal errors |
| TESSERA_DUMP_DIR | ``compile`` writes every stage's IR to ``<dir>/<model-key>/<stage>.mlir`` |
| TESSERA_CACHE_DIR | where compiled artifacts are cached (default: the user cache folder) |
| TESSERA_ALWAYS_COMPILE | build afresh, never reusing the cache (stored where no entry is) |
| TESSERA_PRINT_IR_AFTER_ALL | ``compile`` prints the IR after every pass to stderr |
| TESSERA_VERIFY_EACH | 0 skips the tessera verifier between passes in ``compile`` (default 1) |
| TESSERA_LOG | ``info`` or ``debug`` turns the ``tessera`` logger on, to stderr (default: silent) |
| TESSERA_CUDA_GRAPHS | 0 runs the GPU decode step launch by launch, not as one CUDA graph |
| TESSERA_PROGRAMMATIC_LAUNCH | 0 starts each CUDA kernel only once the one before it has ended |
| TESSERA_TUNING | the folder of the user's kernel tuning tables (default: the cache's ``tuning``) |
| CUDA_HOME, CUDA_PATH | where ptxas is looked for when it is not on PATH |
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import TesseraError


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def debug() -> bool:
    return _flag("TESSERA_DEBUG")


def dump_dir() -> Path | None:
    value = os.environ.get("TESSERA_DUMP_DIR")
    return Path(value) if value else None


def cache_dir() -> Path:
    """TESSERA_CACHE_DIR, else the platform's user cache folder for ``tessera``.

    platformdirs applies the XDG rules on Linux: an empty or relative ``XDG_CACHE_HOME`` is
    ignored, so the cache never lands in whatever folder the process happens to run in."""
    value = os.environ.get("TESSERA_CACHE_DIR")
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tessera", appauthor=False))


def tuning_dir() -> Path:
    """TESSERA_TUNING, else ``tuning`` in the cache folder: where the user's kernel tuning
    tables (``<arch>.json``) are read from and ``bench/tune.py --install`` writes."""
    value = os.environ.get("TESSERA_TUNING")
    return Path(value).expanduser() if value else cache_dir() / "tuning"


def always_compile() -> bool:
    return _flag("TESSERA_ALWAYS_COMPILE")


def cuda_graphs() -> bool:
    return _flag("TESSERA_CUDA_GRAPHS", default=True)


def programmatic_launch() -> bool:
    return _flag("TESSERA_PROGRAMMATIC_LAUNCH", default=True)


def print_ir_after_all() -> bool:
    return _flag("TESSERA_PRINT_IR_AFTER_ALL")


def verify_each() -> bool:
    return _flag("TESSERA_VERIFY_EACH", default=True)


# TESSERA_LOG's values and the logging level each gives; "off" (or unset) leaves the logger silent.
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LOG_OFF = ("", "0", "off", "none")


def log_level() -> int | None:
    """The level TESSERA_LOG asks for, or None to stay silent."""
    value = os.environ.get("TESSERA_LOG", "").strip().lower()
    if value in _LOG_OFF:
        return None
    if value not in LOG_LEVELS:
        raise TesseraError(
            f"TESSERA_LOG={os.environ['TESSERA_LOG']!r} is not a log level "
            f"(use {', '.join(LOG_LEVELS)} or off)"
        )
    return LOG_LEVELS[value]


def cuda_homes() -> list[Path]:
    """CUDA toolkit folders named by CUDA_HOME and CUDA_PATH (where ptxas is looked for after
    PATH)."""
    return [Path(os.environ[name]) for name in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(name)]
