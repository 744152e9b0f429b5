"""Tessera's runtime: loads a compiled artifact and runs its programs.

It imports nothing from MLIR, llvmlite or the compiler (numpy, torch, ctypes and the standard
library only), so an artifact built on one machine runs on another that has only these.

    artifact = tessera.runtime.load("out/gemma")
    artifact.bind(state_dict)
    (logits,) = artifact["prefill"](input_ids)
"""

from __future__ import annotations

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
    TensorSpec,
)
from .manifest_parse import parse_manifest
from .program import Program, Resolver

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
    "TensorSpec",
    "load",
    "parse_manifest",
    "read_manifest",
]
