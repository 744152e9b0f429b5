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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import knobs, log
from .cache_alias import read_alias, write_alias
from .compile_cache import CompileCache, cache_key
from .errors import TesseraError

if TYPE_CHECKING:
    from mlir import ir

    from tessera import runtime
    from tessera.runtime.generate import CachedPrograms, Request, Streamer
    from tessera.runtime.outputs import CausalLMOutput, GenerateOutput

    from .target import Target

FUSION_PIPELINE = "builtin.module(tessera-fuse)"
_IR_DIR = "ir"
_log = log.get("compile")


class _Default:
    """The type of ``DEFAULT``: an argument left to the model's own setting."""

    def __repr__(self) -> str:
        return "DEFAULT"


# generate()'s end and pad tokens when not given: the model's (eos_token_id=None: none).
DEFAULT = _Default()


@dataclass(frozen=True)
class TokenIds:
    """The model's end tokens and pad token, from its generation config (or config)."""

    eos: tuple[int, ...] = ()
    pad: int | None = None


@dataclass(frozen=True)
class _Steps:
    """The checked prompt and the arguments of ``runtime.generate.decode_steps``."""

    prompt: torch.Tensor
    arguments: tuple[CachedPrograms, torch.Tensor, torch.Tensor | None, Request]


class CompiledModel:
    """A compiled model: ``cm(input_ids, attention_mask)`` returns an output whose ``logits``
    [B, S, V] are ``model(input_ids, attention_mask=...).logits``; ``cm.generate(...)`` and
    ``cm.stream(...)`` generate tokens as transformers' ``generate`` does; ``cm.ir(stage)``
    returns a stage's MLIR text."""

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
        tokens: TokenIds | None = None,
    ) -> None:
        from tessera import runtime

        self.directory = directory
        self.key = key
        self.target = target
        self.stages = stages
        self.compile_seconds = compile_seconds
        self.cache_hit = cache_hit
        self.manifest = runtime.read_manifest(directory)
        # The end and pad tokens of the model's generation config: generate()'s defaults.
        self.tokens = tokens or TokenIds()
        self._weights = weights
        self._artifact: runtime.Artifact | None = None
        # The decode steps replayed as CUDA graphs, by program name (None: not decided yet).
        self._graphed: dict[str, object] | None = None
        if self.manifest.target.kind == "cpu":
            self._load()

    def _load(self) -> runtime.Artifact:
        """The loaded artifact with its weights bound (a CUDA one on first use, so that
        compiling works on a machine without a GPU)."""
        if self._artifact is None:
            from tessera import runtime
            from tessera.runtime.collectives import rank_weights

            artifact = runtime.load(self.directory)
            # A tensor-parallel artifact binds this rank's slices and the communicator.
            artifact.bind(rank_weights(self.manifest.metadata, self._weights))
            for program in artifact.programs.values():
                if hasattr(program, "programmatic_launch"):
                    program.programmatic_launch = knobs.programmatic_launch()
            self._artifact = artifact
        return self._artifact

    def __call__(
        self, input_ids: object, attention_mask: object = None, *, return_dict: bool = True
    ) -> CausalLMOutput | torch.Tensor:
        """The logits [B, S, V] of ``input_ids`` (int64 [B, S]: a tensor, an array or lists of
        ints, as a tokenizer returns them) in a ``CausalLMOutput`` (the tensor itself with
        ``return_dict=False``). With an ``attention_mask`` (1 token, 0 padding; each row's
        tokens one run, padded on the left or the right), the logits at every real position
        are those of the row run alone."""
        from tessera.runtime import attention_mask as masks
        from tessera.runtime import checks, generate, outputs

        ids = checks.token_ids(input_ids)
        mask = None if attention_mask is None else masks.as_mask(attention_mask, ids.shape)
        # Right padding needs nothing (causal attention never shows a real token the keys
        # after it); left padding hides each row's leading keys, which the cache programs do.
        if mask is None or bool(mask.all()) or not bool(masks.padding_starts(mask).any()):
            (logits,) = self._load()["prefill"](ids)
        else:
            logits = generate.cached_logits(self._cached_programs(), ids, mask)
        return outputs.CausalLMOutput(logits) if return_dict else logits

    def generate(
        self,
        input_ids: object,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        eos_token_id: int | Sequence[int] | _Default | None = DEFAULT,
        attention_mask: object = None,
        *,
        pad_token_id: int | _Default | None = DEFAULT,
        streamer: Streamer | None = None,
        return_dict_in_generate: bool = False,
        output_logits: bool = False,
    ) -> torch.Tensor | GenerateOutput:
        """The prompts ``input_ids`` [B, S] followed by up to ``max_new_tokens`` generated
        tokens each, [B, S + N], as transformers' ``generate`` returns them.

        Greedy by default; ``do_sample=True`` samples after ``temperature``, ``top_k`` and
        ``top_p`` (in that order), drawing from a generator seeded with ``seed``. A row ends
        at ``eos_token_id`` (default: the model's; None: never) and is padded with
        ``pad_token_id`` (default: the model's, else the first end token); generation stops
        when every row has ended. A batch of prompts of different lengths is left padded
        with an ``attention_mask``. ``streamer`` gets ``put(prompt)``, ``put(tokens)`` per
        step and ``end()``, as a transformers streamer does. ``return_dict_in_generate``
        returns a ``GenerateOutput`` (with ``output_logits``, each step's logits)."""
        from tessera.runtime import generate as generation
        from tessera.runtime.outputs import GenerateOutput

        steps = self._steps(
            input_ids,
            attention_mask,
            max_new_tokens,
            do_sample,
            temperature,
            top_k,
            top_p,
            seed,
            eos_token_id,
            pad_token_id,
            keep_logits=output_logits,
        )
        prompt = steps.prompt
        if streamer is not None:
            streamer.put(prompt.cpu())
        tokens: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        for step in generation.decode_steps(*steps.arguments, keep_logits=output_logits):
            tokens.append(step.tokens)
            if step.logits is not None:
                logits.append(step.logits)
            if streamer is not None:
                streamer.put(step.tokens.cpu())
        if streamer is not None:
            streamer.end()
        new = torch.stack(tokens, dim=1) if tokens else prompt[:, :0]
        sequences = torch.cat([prompt, new.to(prompt.device)], dim=1)
        if return_dict_in_generate:
            return GenerateOutput(sequences, tuple(logits) if output_logits else None)
        return sequences

    def stream(
        self,
        input_ids: object,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        eos_token_id: int | Sequence[int] | _Default | None = DEFAULT,
        attention_mask: object = None,
        *,
        pad_token_id: int | _Default | None = DEFAULT,
    ) -> Iterator[torch.Tensor]:
        """``generate``'s new tokens as they come: one int64 tensor [B] per step (the pad
        token for rows that have ended)."""
        from tessera.runtime import generate as generation

        steps = self._steps(
            input_ids,
            attention_mask,
            max_new_tokens,
            do_sample,
            temperature,
            top_k,
            top_p,
            seed,
            eos_token_id,
            pad_token_id,
            keep_logits=False,
        )
        for step in generation.decode_steps(*steps.arguments):
            yield step.tokens

    def cache_memory(self, batch: int, max_len: int) -> int:
        """The bytes of the KV cache that generating ``batch`` sequences of up to ``max_len``
        tokens (prompt and new tokens) allocates: global layers hold every token, sliding
        layers a ring about twice their window (``runtime/kv_cache.py``)."""
        from tessera.runtime import generate as generation

        # From the manifest alone: a CUDA artifact answers on a machine without a GPU.
        return generation.manifest_cache_memory(self.manifest, batch, max_len)

    def _cached_programs(self) -> CachedPrograms:
        from tessera.runtime import generate as generation
        from tessera.runtime import kv_layout

        artifact = self._load()
        programs: dict[str, object] = dict(artifact.programs)
        if self._graphed is None:
            self._graphed = {}
            if self.target.startswith("cuda") and knobs.cuda_graphs():
                from tessera.runtime.cuda import CudaProgram
                from tessera.runtime.cuda_graph import GraphedProgram

                # Kept with the model: their graphs are captured once per batch shape.
                for name in (kv_layout.DECODE_PROGRAM, kv_layout.GREEDY_DECODE_PROGRAM):
                    step = programs.get(name)
                    if isinstance(step, CudaProgram):
                        self._graphed[name] = GraphedProgram(step)
        programs.update(self._graphed)
        return generation.cached_programs(self.manifest, programs, f"target {self.target}")

    def _steps(
        self,
        input_ids: object,
        attention_mask: object,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int | None,
        eos_token_id: int | Sequence[int] | _Default | None,
        pad_token_id: int | _Default | None,
        keep_logits: bool,
    ) -> _Steps:
        """The checked arguments of ``decode_steps``."""
        from tessera.runtime import attention_mask as masks
        from tessera.runtime import checks, generate, sampling

        programs = self._cached_programs()
        ids = checks.token_ids(input_ids)
        mask = None if attention_mask is None else masks.as_mask(attention_mask, ids.shape)
        ends = self.tokens.eos if isinstance(eos_token_id, _Default) else eos_token_id
        eos = generate.token_set(ends, "eos_token_id")
        pad = self.tokens.pad if isinstance(pad_token_id, _Default) else pad_token_id
        if pad is None:
            # transformers pads with the first end token when the model names no pad token.
            pad = ends if isinstance(ends, int) else next(iter(ends or ()), 0)
        if isinstance(pad, bool) or not isinstance(pad, int):
            raise TesseraError(f"pad_token_id must be a token id, found {pad!r}")
        request = generate.Request(
            max_new_tokens,
            sampling.Sampling(do_sample, temperature, top_k, top_p),
            seed,
            eos,
            pad,
        )
        return _Steps(ids, (programs, ids, mask, request))

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
        return _op_counts(self.ir("mid"))

    def __repr__(self) -> str:
        return f"CompiledModel(target={self.target!r}, key={self.key!r}, at={self.directory})"


def compile(
    model: torch.nn.Module | str | os.PathLike[str],
    target: str = "cpu",
    *,
    dtype: torch.dtype | str | None = None,
    max_batch: int | None = None,
    max_seq_len: int | None = None,
    cache: bool = True,
    tensor_parallel: int = 1,
) -> CompiledModel:
    """Compiles ``model`` for ``target``.

    ``model`` is a torch module (transformers' Gemma/Gemma2/Gemma3ForCausalLM or one built from
    the same parts) or a checkpoint: a folder (Hugging Face safetensors, or a gemma_pytorch
    ``.ckpt`` with its config.json) or a Hugging Face Hub id found in the local cache, compiled
    in ``dtype`` (a torch dtype or its name, e.g. ``"bfloat16"``; default and ``"auto"``: the
    checkpoint's). ``max_seq_len`` bounds the sequence length the
    compiled model accepts (default: the config's ``max_position_embeddings``).
    ``tensor_parallel=N`` compiles this process's shard of an N-way tensor-parallel model
    (one process per rank, torch.distributed initialised by the caller or from torchrun's
    environment; CPU target); it binds its slices of the full weights and runs the
    collectives with the other ranks."""
    started = time.perf_counter()
    from .target import auto_choice, resolve

    if target == "auto":
        target, why = auto_choice()
        print(f"tessera: target {target} ({why})", file=sys.stderr)
    backend = resolve(target)
    ranks, rank = _parallel_rank(tensor_parallel, backend.kind)
    checkpoint = None
    if isinstance(model, str | os.PathLike):
        from .checkpoints import open_checkpoint, resolve_checkpoint

        # A folder or a Hub id in the local cache; the model is traced from shape-only
        # parameters and its weights are read one at a time when they are bound, below.
        path, loading = resolve_checkpoint(model), time.perf_counter()
        checkpoint = open_checkpoint(path, dtype=dtype)
        model = checkpoint.model_for_tracing()
        _log.info("opened checkpoint %s in %.2f s", path, time.perf_counter() - loading)
    elif dtype not in (None, "auto"):
        raise TesseraError("dtype applies to checkpoint paths; convert a module with .to(dtype)")
    if not isinstance(model, torch.nn.Module):
        raise TesseraError(
            f"expected a torch.nn.Module or a checkpoint path, got {type(model).__name__}"
        )
    if max_seq_len is None:
        max_seq_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    options: dict[str, Any] = {
        "max_batch": max_batch,
        "max_seq_len": max_seq_len,
        **({"tensor_parallel": [ranks, rank]} if ranks > 1 else {}),
    }
    target_stages = backend.stages()
    stages = ("high", "mid", *(stage.name for stage in target_stages))
    store = CompileCache(knobs.cache_dir())
    alias = None
    if cache and not knobs.always_compile() and checkpoint is None:
        # A module compiled before is found by its fingerprint, without tracing it again.
        alias = _alias_key(model, backend, options)
        if alias is not None:
            found = _load_by_alias(store, alias, model, backend.name, stages, started)
            if found is not None:
                _log.info("cache hit %s, found by the module's fingerprint (no trace)", found.key)
                _log.info(
                    "compiled for %s in %.2f s (cache hit)", backend.name, found.compile_seconds
                )
                _dump(found)
                return found

    from .context import make_context
    from .frontend import trace

    context = make_context()
    tracing = time.perf_counter()
    with _eval_mode(model):
        traced = trace(model, context)
    high = str(traced.module)
    _log.info(
        "stage high: %.2f s, traced %s (%d weights)",
        time.perf_counter() - tracing,
        type(model).__name__,
        len(traced.weights),
    )
    key = cache_key({"ir": high, "options": options, **_compile_inputs(backend)})
    weights: Mapping[str, torch.Tensor] = {
        name: tensor for (name, _, _), tensor in zip(traced.weights, traced.parameters, strict=True)
    }
    if checkpoint is not None:
        weights = checkpoint.weights(device="cuda" if backend.kind == "cuda" else "cpu")

    def build(directory: Path) -> None:
        from .pipeline import run_pipeline
        from .target import Build

        (directory / _IR_DIR).mkdir()
        (directory / _IR_DIR / "high.mlir").write_text(high)
        # Each stage logs one line (time, what it did) and moves the bar on (on a terminal).
        with log.Stages((*stages[1:], "artifact")) as progress:
            with progress.run("mid") as step:
                run_pipeline(
                    traced.module,
                    _mid_pipeline(ranks, rank),
                    verify_each=knobs.verify_each(),
                    print_ir_after_all=knobs.print_ir_after_all(),
                )
                mid = str(traced.module)
                step.note(_stage_note("mid", mid))
            (directory / _IR_DIR / "mid.mlir").write_text(mid)
            state = Build(
                traced.module,
                directory,
                {"max_batch": max_batch, "max_seq_len": max_seq_len},
                {"model_kind": traced.model_kind, "key": key, **_shard_metadata(traced.module)},
            )
            for stage in target_stages:
                with progress.run(stage.name) as step:
                    text = stage.run(state)
                    step.note(_stage_note(stage.name, text))
                (directory / _IR_DIR / f"{stage.name}.mlir").write_text(text)
            with progress.run("artifact") as step:
                backend.finish(state)
                step.note("wrote " + ", ".join(sorted(p.name for p in directory.glob("*.*"))))

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
                tokens=_token_ids(model),
            )
        except ArtifactError:
            if not cache_hit:
                raise
            return None

    # cache=False never touches the shared entry: another process may be running it.
    compiled = store.obtain(
        key,
        build,
        load,
        reuse=cache and not knobs.always_compile(),
        publish=cache,
        describe={"model": _model_name(model, traced.parameters), "target": backend.name},
    )
    if alias is not None:
        write_alias(store.root, alias, key)
    _log.info(
        "compiled for %s in %.2f s (%s)",
        backend.name,
        compiled.compile_seconds,
        "cache hit" if compiled.cache_hit else "built",
    )
    _dump(compiled)
    return compiled


def _compile_inputs(backend: Target) -> dict[str, Any]:
    """What besides the model and the options every compiled artifact depends on."""
    return {
        "target": backend.name,
        "fingerprint": backend.fingerprint(),
        "tessera": _version("tessera"),
        "compiler_sources": _compiler_fingerprint(),
        "mlir": _version("xtc-mlir-python-bindings"),
    }


def _alias_key(model: torch.nn.Module, backend: Target, options: Mapping[str, Any]) -> str | None:
    """The cache alias of compiling ``model`` (``cache_alias.py``), None without a
    fingerprint."""
    from .module_key import module_fingerprint

    fingerprint = module_fingerprint(model)
    if fingerprint is None:
        return None
    return cache_key({"module": fingerprint, "options": options, **_compile_inputs(backend)})


def _load_by_alias(
    store: CompileCache,
    alias: str,
    model: torch.nn.Module,
    target: str,
    stages: tuple[str, ...],
    started: float,
) -> CompiledModel | None:
    """The entry an alias names, bound to ``model``'s own tensors; None when the alias, the
    entry or one of the weights it names is missing (the caller then traces)."""
    from tessera import runtime

    from .module_key import weights_by_name

    key = read_alias(store.root, alias)
    entry = store.lookup(key) if key is not None else None
    if key is None or entry is None:
        return None
    if not all((entry / _IR_DIR / f"{stage}.mlir").is_file() for stage in stages):
        return None
    try:
        manifest = runtime.read_manifest(entry)
    except runtime.ArtifactError:
        return None
    names = sorted({w.name for program in manifest.programs for w in program.weights})
    weights = weights_by_name(model, names)
    if weights is None:
        return None
    try:
        return CompiledModel(
            entry,
            weights,
            key=key,
            target=target,
            stages=stages,
            compile_seconds=time.perf_counter() - started,
            cache_hit=True,
            tokens=_token_ids(model),
        )
    except runtime.ArtifactError:
        return None


def _parallel_rank(tensor_parallel: object, kind: str) -> tuple[int, int]:
    """(ranks, this process's rank) for ``compile(tensor_parallel=...)``."""
    if isinstance(tensor_parallel, bool) or not isinstance(tensor_parallel, int):
        raise TesseraError(f"tensor_parallel must be a number of ranks, found {tensor_parallel!r}")
    if tensor_parallel < 1:
        raise TesseraError(f"tensor_parallel must be at least 1, found {tensor_parallel}")
    if tensor_parallel == 1:
        return 1, 0
    if kind != "cpu":
        raise TesseraError(
            f"tensor_parallel={tensor_parallel} runs on the cpu target only; the {kind} "
            "lowering of the collectives is not written"
        )
    from tessera.runtime.collectives import world

    return tensor_parallel, world(tensor_parallel)


def _mid_pipeline(ranks: int, rank: int) -> str:
    """Fusion, then (for a tensor-parallel compile) this rank's shard of the fused IR."""
    if ranks == 1:
        return FUSION_PIPELINE
    shard = f"tessera-shard-tensor-parallel{{ranks={ranks} rank={rank}}}"
    return f"builtin.module(tessera-fuse, {shard}, canonicalize, cse)"


def _shard_metadata(module: ir.Module) -> dict[str, object]:
    """The manifest metadata of a sharded module: ranks, rank and every weight's slice."""
    from tessera.passes.tp_signature import shard_layout
    from tessera.runtime.collectives import METADATA_KEY

    layout = shard_layout(module.operation)
    return {} if layout is None else {METADATA_KEY: layout.to_json()}


def _op_counts(text: str) -> dict[str, int]:
    """How many of each tessera op ``text`` holds."""
    names = re.findall(r'"(tessera\.[a-z_.]+)"', text)
    return dict(sorted(Counter(n for n in names if n != "tessera.yield").items()))


def _stage_note(stage: str, text: str) -> str:
    """What a stage did, where its text tells cheaply (for its log line)."""
    if stage == "mid":
        fused = ", ".join(f"{name} x{count}" for name, count in _op_counts(text).items())
        return f"fused {fused or 'nothing'}"
    if stage == "gpu":
        return f"{text.count('gpu.func @')} kernels built"
    return ""


def _model_name(model: torch.nn.Module, parameters: Sequence[torch.Tensor]) -> str:
    """The model's class and dtype, as ``tessera cache list`` shows them."""
    dtypes = {str(p.dtype).removeprefix("torch.") for p in parameters if p.is_floating_point()}
    return " ".join([type(model).__name__, *sorted(dtypes)])


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


_COMPILER_PACKAGES = (
    "tessera",
    "tessera.dialects",
    "tessera.passes",
    "tessera.lowering",
    "tessera.runtime",
)


@functools.cache
def _compiler_fingerprint() -> str:
    """A hash of the compiler's own sources, so that a changed pass never reuses old code."""
    digest = hashlib.sha256()
    # The runtime is in it because it writes part of every artifact (the manifest).
    for package in _COMPILER_PACKAGES:
        init_file = importlib.import_module(package).__file__
        assert init_file is not None, f"{package} is a regular package (it has an __init__.py)"
        root = Path(init_file).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _token_ids(model: torch.nn.Module) -> TokenIds:
    """The end and pad tokens ``generate`` defaults to: the model's generation config's, as
    transformers' ``generate`` uses them, else its config's."""
    found: dict[str, object] = {}
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(source, name, None)
            if name not in found and value is not None:
                found[name] = value
    eos = found.get("eos_token_id")
    ends = (eos,) if isinstance(eos, int) else tuple(eos) if isinstance(eos, list | tuple) else ()
    pad = found.get("pad_token_id")
    return TokenIds(
        tuple(int(e) for e in ends if isinstance(e, int)), pad if isinstance(pad, int) else None
    )


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
