"""``tessera.compile``: a torch model (or a checkpoint folder) in, a runnable model out.

The driver runs the stages in order — trace (``high``), fuse (``mid``), the target's own
stages — and keeps every stage's IR next to the artifact in the compile cache, so a cache hit
answers ``ir(stage)`` too. The compiled model runs through ``tessera.runtime`` (no MLIR on the
hot path).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from . import knobs
from .compile_cache import CompileCache, cache_key
from .errors import TesseraError

FUSION_PIPELINE = "builtin.module(tessera-fuse)"
TARGETS = {"cpu": "tessera.lowering.cpu.target"}
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
        self._artifact = runtime.load(directory)
        self._artifact.bind(weights)
        self._prefill = self._artifact["prefill"]

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids, dtype=torch.int64)
        (logits,) = self._prefill(input_ids)
        return logits

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
    if target not in TARGETS:
        raise TesseraError(f"unknown target '{target}' (available: {', '.join(TARGETS)})")
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

    backend = importlib.import_module(TARGETS[target])
    context = make_context()
    with _eval_mode(model):
        traced = trace(model, context)
    high = str(traced.module)
    key = cache_key(
        {
            "ir": high,
            "target": target,
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
    stages = ("high", "mid", *backend.STAGES)
    store = CompileCache(knobs.cache_dir())

    def build(directory: Path) -> None:
        texts = {"high": high}
        from .pipeline import run_pipeline

        run_pipeline(
            traced.module,
            FUSION_PIPELINE,
            verify_each=knobs.verify_each(),
            print_ir_after_all=knobs.print_ir_after_all(),
        )
        texts["mid"] = str(traced.module)
        texts.update(
            backend.build(
                traced.module,
                directory,
                max_batch=max_batch,
                max_seq_len=max_seq_len,
                metadata={"model_kind": traced.model_kind, "key": key},
            )
        )
        (directory / _IR_DIR).mkdir()
        for stage, text in texts.items():
            (directory / _IR_DIR / f"{stage}.mlir").write_text(text)

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
                target=target,
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
