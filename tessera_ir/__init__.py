"""Tessera: an MLIR compiler and runtime for Gemma-class decoder models.

``import tessera`` stays light: the compiler (and MLIR) load on first use of ``compile`` or
``CompiledModel``, so ``import tessera.runtime`` works where only the runtime is installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    LocatedError,
    LoweringError,
    ParseError,
    PassError,
    RuntimeInputError,
    TesseraError,
    ToolchainError,
    UnsupportedOpError,
    VerifyError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CompiledModel",
    "LocatedError",
    "LoweringError",
    "ParseError",
    "PassError",
    "RuntimeInputError",
    "TesseraError",
    "ToolchainError",
    "UnsupportedOpError",
    "VerifyError",
    "__version__",
    "compile",
]

_LAZY = {"compile": "tessera.api", "CompiledModel": "tessera.api"}

if TYPE_CHECKING:
    from .api import CompiledModel, compile


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tessera' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
