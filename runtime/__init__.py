"""Tessera's runtime: loads a compiled artifact and runs its programs.

It imports nothing from MLIR, llvmlite or the compiler (numpy, torch, ctypes and the standard
library only), so an artifact built on one machine runs on another that has only these.

    artifact = tessera.runtime.load("out/gemma")
    artifact.bind(state_dict)
    (logits,) = artifact["prefill"](input_ids)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loader import Artifact, load, read_manifest
    from .manifest import (
        ArgRef,
        ArtifactError,
        BinarySpec,
        HostCall,
        Manifest,
        ProgramSpec,
        SymbolSpec,
        TargetSpec,
        TensorMapArg,
        TensorSpec,
    )
    from .manifest_parse import parse_manifest
    from .program import Program, Resolver

# Where each public name lives. They are imported on first use, so that the compiler's passes,
# which read a few plain modules of this package (``expr``, ``kv_layout``), do not pay for
# importing torch: tessera-opt starts in a fraction of the time.
_HOMES = {
    "Artifact": "loader",
    "load": "loader",
    "read_manifest": "loader",
    "ArgRef": "manifest",
    "ArtifactError": "manifest",
    "BinarySpec": "manifest",
    "HostCall": "manifest",
    "Manifest": "manifest",
    "ProgramSpec": "manifest",
    "SymbolSpec": "manifest",
    "TargetSpec": "manifest",
    "TensorMapArg": "manifest",
    "TensorSpec": "manifest",
    "parse_manifest": "manifest_parse",
    "Program": "program",
    "Resolver": "program",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tessera.runtime' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ArgRef",
    "Artifact",
    "ArtifactError",
    "BinarySpec",
    "HostCall",
    "Manifest",
    "Program",
    "ProgramSpec",
    "Resolver",
    "SymbolSpec",
    "TargetSpec",
    "TensorMapArg",
    "TensorSpec",
    "load",
    "parse_manifest",
    "read_manifest",
]
