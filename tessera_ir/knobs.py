"""Every environment variable Tessera reads, in one place (the only reader of ``os.environ``).

| variable | effect |
|---|---|
| TESSERA_DEBUG | CLIs print Python tracebacks for internal errors |
| TESSERA_DUMP_DIR | ``compile`` writes every stage's IR to ``<dir>/<model-key>/<stage>.mlir`` |
| TESSERA_CACHE_DIR | where compiled artifacts are cached (default ``~/.cache/tessera``) |
| TESSERA_ALWAYS_COMPILE | ignore the compile cache (still writes it) |
| TESSERA_PRINT_IR_AFTER_ALL | ``compile`` prints the IR after every pass to stderr |
| TESSERA_VERIFY_EACH | 0 skips the tessera verifier between passes in ``compile`` (default 1) |
| CUDA_HOME, CUDA_PATH | where ptxas is looked for when it is not on PATH |
"""

from __future__ import annotations

import os
from pathlib import Path


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
    value = os.environ.get("TESSERA_CACHE_DIR")
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tessera"


def always_compile() -> bool:
    return _flag("TESSERA_ALWAYS_COMPILE")


def print_ir_after_all() -> bool:
    return _flag("TESSERA_PRINT_IR_AFTER_ALL")


def verify_each() -> bool:
    return _flag("TESSERA_VERIFY_EACH", default=True)


def cuda_homes() -> list[Path]:
    """CUDA toolkit folders named by CUDA_HOME and CUDA_PATH (where ptxas is looked for after
    PATH)."""
    return [Path(os.environ[name]) for name in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(name)]
