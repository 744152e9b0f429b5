"""The CPU target as the compiler driver sees it: mid-level IR in, artifact folder out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlir import ir

from tessera.pipeline import run_pipeline

from .artifact import build_artifact, build_target
from .entry_describe import describe_entry
from .pipeline import lower

NAME = "cpu"
STAGES = ("linalg", "llvm")


def fingerprint() -> dict[str, Any]:
    """What, besides the IR, decides the code: the host CPU the code is specialised to."""
    target = build_target()
    return {"arch": target.arch, "cpu": target.cpu, "features": list(target.features)}


def build(
    module: ir.Module,
    directory: Path,
    *,
    max_batch: int | None,
    max_seq_len: int | None,
    metadata: Mapping[str, Any],
) -> dict[str, str]:
    """Lowers ``module`` (mid-level IR, changed in place) and writes the artifact for its
    ``@forward`` as the ``prefill`` program into ``directory``; returns the stages' IR."""
    run_pipeline(module, "builtin.module(tessera-cpu-entry-abi)")
    spec = describe_entry(
        module,
        "forward",
        "prefill",
        dims={"input_ids": ["B", "S"]},
        bounds={"B": (1, max_batch), "S": (1, max_seq_len)},
    )
    stages = lower(module)
    build_artifact(module, [spec], directory, metadata=metadata)
    return stages
