"""``tessera.compile``: a torch model (or a checkpoint folder) in, a runnable model out.

One stage loop runs every target: trace (``high``), fuse (``mid``), then the target's own
stages in order (``tessera.target``), keeping every stage's text next to the artifact in the
compile cache, so a cache hit answers ``ir(stage)`` too. The compiled model runs through
``tessera.runtime`` (no MLIR on the hot path).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import knobs
from .compile_cache import CompileCache, cache_key
from .errors import TesseraError

if TYPE_CHECKING:
    from tessera import runtime

FUSION_PIPELINE = "builtin.module(tessera-fuse)"
_IR_DIR = "ir"


class CompiledModel:
    """A compiled model: ``cm(input_ids)`` returns logits [B, S, V] like
    ``model(input_ids).logits``; ``cm.ir(stage)`` returns a stage's MLIR text."""

    def __init__(
        self,
        directory: Path,
        weights: Mapping[str, torch.Tensor],
        *,
        key: str,
        target: str,
        stages: tuple[str, ...],
        compile_seconds: float,
        cache_hit: bool,
    ) -> None:
        from tessera import runtime

        self.directory = directory
        self.key = key
        self.target = target
        self.stages = stages
        self.compile_seconds = compile_seconds
        self.cache_hit = cache_hit
        self.manifest = runtime.read_manifest(directory)
        self._weights = weights
        self._artifact: runtime.Artifact | None = None
        if self.manifest.target.kind == "cpu":
            self._load()

    def _load(self) -> runtime.Artifact:
        """The loaded artifact with its weights bound (a CUDA one on first use, so that
        compiling works on a machine without a GPU)."""
        if self._artifact is None:
            from tessera import runtime

            artifact = runtime.load(self.directory)
            artifact.bind(self._weights)
            self._artifact = artifact
        return self._artifact

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids, dtype=torch.int64)
        (logits,) = self._load()["prefill"](input_ids)
        return logits

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Copies the artifact (manifest, binaries, every stage's IR) to ``directory``, which
        ``tessera.runtime.load`` then runs on any machine with the runtime's dependencies; the
        weights are bound separately (``artifact.bind(state_dict)``)."""
        destination = Path(directory)
        if destination.exists() and any(destination.iterdir()):
            raise TesseraError(f"{destination} exists and is not empty; choose a new folder")
        shutil.copytree(self.directory, destination, dirs_exist_ok=True)
        return destination

    def memory_plan(self) -> str:
        """The memory plan of the prefill program: its arena and the slices in it (for targets
        that plan memory; the CPU code allocates inside its compiled function)."""
        program = self.manifest.program("prefill")
        if not program.buffers:
            return f"target {self.target}: no planned buffers (allocation is inside the code)"
        lines = [f"arena bytes = {program.arena}"]
        for buffer in program.buffers:
            if buffer.kind == "arena":
                lines.append(
                    f"  {buffer.name:>8}  offset {buffer.offset:<28} bytes {buffer.bytes:<24} "
                    f"{buffer.dtype}{list(buffer.shape)}"
                )
            else:
                lines.append(
                    f"  {buffer.name:>8}  {buffer.kind} {buffer.dtype}{list(buffer.shape)}"
                )
        return "\n".join(lines)

    def ir(self, stage: str) -> str:
        """The MLIR text of ``stage`` (one of ``self.stages``)."""
        if stage not in self.stages:
            raise TesseraError(f"no stage '{stage}' (stages: {', '.join(self.stages)})")
        return (self.directory / _IR_DIR / f"{stage}.mlir").read_text()

    def fused_ops(self) -> dict[str, int]:
        """How many of each tessera op the mid-level IR holds."""
        names = re.findall(r'"(tessera\.[a-z_.]+)"', self.ir("mid"))
        return dict(sorted(Counter(n for n in names if n != "tessera.yield").items()))

    def __repr__(self) -> str:
        return f"CompiledModel(target={self.target!r}, key={self.key!r}, at={self.directory})"


def compile(
    model: torch.nn.Module | str | os.PathLike[str],
    target: str = "cpu",
    *,
    dtype: torch.dtype | None = None,
    max_batch: int | None = None,
    max_seq_len: int | None = None,
    cache: bool = True,
) -> CompiledModel:
    """Compiles ``model`` for ``target``.

    ``model`` is a torch module (transformers' Gemma/Gemma2/Gemma3ForCausalLM or one built from
    the same parts) or the path of a Hugging Face checkpoint folder, which is loaded in
    ``dtype`` (default: the checkpoint's). ``max_seq_len`` bounds the sequence length the
    compiled model accepts (default: the config's ``max_position_embeddings``)."""
    started = time.perf_counter()
    from .target import auto_choice, resolve

    if target == "auto":
        target, why = auto_choice()
        print(f"tessera: target {target} ({why})", file=sys.stderr)
    backend = resolve(target)
    if isinstance(model, str | os.PathLike):
        from .checkpoints import load_hf_checkpoint

        model = load_hf_checkpoint(model, dtype=dtype)
    elif dtype is not None:
        raise TesseraError("dtype applies to checkpoint paths; convert a module with .to(dtype)")
    if not isinstance(model, torch.nn.Module):
        raise TesseraError(
            f"expected a torch.nn.Module or a checkpoint path, got {type(model).__name__}"
        )
    if max_seq_len is None:
        max_seq_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    from .context import make_context
    from .frontend import trace

    context = make_context()
    with _eval_mode(model):
        traced = trace(model, context)
    high = str(traced.module)
    key = cache_key(
        {
            "ir": high,
            "target": backend.name,
            "fingerprint": backend.fingerprint(),
            "options": {"max_batch": max_batch, "max_seq_len": max_seq_len},
            "tessera": _version("tessera"),
            "compiler_sources": _compiler_fingerprint(),
            "mlir": _version("xtc-mlir-python-bindings"),
        }
    )
    weights = {
        name: tensor for (name, _, _), tensor in zip(traced.weights, traced.parameters, strict=True)
    }
    target_stages = backend.stages()
    stages = ("high", "mid", *(stage.name for stage in target_stages))
    store = CompileCache(knobs.cache_dir())

    def build(directory: Path) -> None:
        from .pipeline import run_pipeline
        from .target import Build

        (directory / _IR_DIR).mkdir()
        (directory / _IR_DIR / "high.mlir").write_text(high)
        run_pipeline(
            traced.module,
            FUSION_PIPELINE,
            verify_each=knobs.verify_each(),
            print_ir_after_all=knobs.print_ir_after_all(),
        )
        (directory / _IR_DIR / "mid.mlir").write_text(str(traced.module))
        state = Build(
            traced.module,
            directory,
            {"max_batch": max_batch, "max_seq_len": max_seq_len},
            {"model_kind": traced.model_kind, "key": key},
        )
        for stage in target_stages:
            (directory / _IR_DIR / f"{stage.name}.mlir").write_text(stage.run(state))
        backend.finish(state)

    def load(entry: Path, cache_hit: bool) -> CompiledModel | None:
        """The compiled model in ``entry``, or None when the entry is incomplete or corrupt."""
        from tessera.runtime import ArtifactError

        if not all((entry / _IR_DIR / f"{stage}.mlir").is_file() for stage in stages):
            return None
        try:
            return CompiledModel(
                entry,
                weights,
                key=key,
                target=backend.name,
                stages=stages,
                compile_seconds=time.perf_counter() - started,
                cache_hit=cache_hit,
            )
        except ArtifactError:
            if not cache_hit:
                raise
            return None

    entry = store.lookup(key) if cache and not knobs.always_compile() else None
    compiled = load(entry, cache_hit=True) if entry else None
    if compiled is None:
        store.discard(key)
        entry = store.store(key, build)
        compiled = load(entry, cache_hit=False)
        if compiled is None:
            raise TesseraError(f"the freshly built artifact at {entry} does not load")
    _dump(compiled)
    return compiled


def _dump(compiled: CompiledModel) -> None:
    directory = knobs.dump_dir()
    if directory is None:
        return
    folder = directory / compiled.key
    folder.mkdir(parents=True, exist_ok=True)
    for stage in compiled.stages:
        (folder / f"{stage}.mlir").write_text(compiled.ir(stage))


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Traces in eval mode and gives every submodule its training flag back afterwards."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag


@functools.cache
def _compiler_fingerprint() -> str:
    """A hash of the compiler's own sources, so that a changed pass never reuses old code."""
    digest = hashlib.sha256()
    for package in ("tessera", "tessera.dialects", "tessera.passes", "tessera.lowering"):
        init_file = importlib.import_module(package).__file__
        assert init_file is not None, f"{package} is a regular package (it has an __init__.py)"
        root = Path(init_file).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
