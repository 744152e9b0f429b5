"""The CPU target as the compiler driver sees it: stages ``abi`` → ``linalg`` → ``llvm``, then
a shared object and its manifest."""

from __future__ import annotations

from typing import Any

from tessera.errors import LoweringError, PassError
from tessera.pipeline import run_pipeline
from tessera.target import Build, Stage

from .artifact import build_artifact, build_target
from .entry_describe import describe_entry
from .host import host
from .parallel import define_launchers
from .pipeline import TO_LLVM, stamp_target


class CpuTarget:
    kind = "cpu"

    def __init__(self) -> None:
        self.arch = build_target().arch

    @property
    def name(self) -> str:
        return "cpu"

    def fingerprint(self) -> dict[str, Any]:
        """The host CPU the code is specialised to, and the threads a kernel may use."""
        target = build_target()
        return {
            "arch": target.arch,
            "cpu": target.cpu,
            "features": list(target.features),
            "threads": host().threads,
        }

    def stages(self) -> tuple[Stage, ...]:
        return (Stage("abi", _abi), Stage("linalg", _linalg), Stage("llvm", _llvm))

    def finish(self, build: Build) -> None:
        build_artifact(
            build.module, [build.scratch["spec"]], build.directory, metadata=build.metadata
        )


def _abi(build: Build) -> str:
    """Outputs become caller-allocated arguments; the entry is described for the manifest."""
    run_pipeline(build.module, "builtin.module(tessera-cpu-entry-abi)")
    build.scratch["spec"] = describe_entry(
        build.module,
        "forward",
        "prefill",
        dims={"input_ids": ["B", "S"]},
        bounds={"B": (1, build.options["max_batch"]), "S": (1, build.options["max_seq_len"])},
    )
    return str(build.module)


def _linalg(build: Build) -> str:
    """Tessera ops replaced by calls to kernels written for their exact types."""
    try:
        run_pipeline(build.module, "builtin.module(tessera-lower-to-cpu)")
    except PassError as problem:
        raise LoweringError(problem.message, problem.location) from None
    return str(build.module)


def _llvm(build: Build) -> str:
    """Bufferized, loops, LLVM dialect; thread launchers defined; host CPU stamped."""
    try:
        run_pipeline(build.module, "builtin.module(" + ",".join(TO_LLVM) + ")", verify_each=False)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(f"cpu lowering to LLVM failed: {error}") from None
    define_launchers(build.module)
    stamp_target(build.module, host())
    return str(build.module)


def make_target(arch: str | None) -> CpuTarget:
    return CpuTarget()
