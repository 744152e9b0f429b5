"""The CPU target as the compiler driver sees it: stages ``abi`` → ``linalg`` → ``llvm``, then
a shared object and its manifest."""

from __future__ import annotations

from typing import Any

from mlir import ir

from tessera.errors import LoweringError, PassError
from tessera.passes.insert_kv_cache import kv_cache_problem
from tessera.passes.kv_signature import kv_layout_of
from tessera.pipeline import run_pipeline
from tessera.runtime import kv_layout
from tessera.target import Build, Stage

from .artifact import build_artifact, build_target
from .entry_abi import dict_attrs, symbol_name
from .entry_describe import INPUT_ATTR, Dim, describe_entry
from .host import Host, target
from .parallel import define_launchers
from .pipeline import stamp_target, to_llvm

ENTRY = "forward"
TOKENS = "input_ids"
# The manifest's names of the token input's dims.
_SYMBOLS = ("B", "S")
# Tokens per KV-cache block: the paged attention kernel walks a block's keys in one loop.
KV_BLOCK_SIZE = 16


class CpuTarget:
    """``isa``: the instruction set the code is written for: ``host`` (this CPU, all of its
    features), or one of ``host.ISAS`` for an artifact that runs on any CPU that has it."""

    kind = "cpu"

    def __init__(self, isa: str = "host") -> None:
        try:
            self.machine: Host = target(isa)
        except ValueError as problem:
            raise LoweringError(str(problem)) from None
        self.isa = isa
        self.arch = build_target(self.machine).arch

    @property
    def name(self) -> str:
        return "cpu" if self.isa == "host" else f"cpu:{self.isa}"

    def fingerprint(self) -> dict[str, Any]:
        """The CPU the code is specialised to, and the threads a kernel may use."""
        built = build_target(self.machine)
        return {
            "arch": built.arch,
            "cpu": built.cpu,
            "features": list(built.features),
            "threads": self.machine.threads,
        }

    def stages(self) -> tuple[Stage, ...]:
        return (Stage("abi", _abi), Stage("linalg", self._linalg), Stage("llvm", self._llvm))

    def finish(self, build: Build) -> None:
        build_artifact(
            build.module,
            build.scratch["specs"],
            build.directory,
            metadata={**build.metadata, **build.scratch["metadata"]},
            machine=self.machine,
        )

    def _linalg(self, build: Build) -> str:
        """Tessera ops replaced by calls to kernels written for their exact types."""
        try:
            run_pipeline(build.module, f"builtin.module(tessera-lower-to-cpu{{isa={self.isa}}})")
        except PassError as problem:
            raise LoweringError(problem.message, problem.location) from None
        return str(build.module)

    def _llvm(self, build: Build) -> str:
        """Bufferized, loops, LLVM dialect; thread launchers defined; the CPU stamped."""
        try:
            pipeline = "builtin.module(" + ",".join(to_llvm(self.machine)) + ")"
            run_pipeline(build.module, pipeline, verify_each=False)
        except LoweringError:
            raise
        except Exception as error:
            raise LoweringError(f"cpu lowering to LLVM failed: {error}") from None
        define_launchers(build.module)
        stamp_target(build.module, self.machine)
        return str(build.module)


def token_dims(module: ir.Module) -> list[Dim]:
    """The dims of ``@forward``'s token input as the manifest names them: ``B`` and ``S``, or
    the batch's size where the front end made it static (a model torch.export cannot trace
    with a dynamic batch)."""
    for view in module.body.operations:
        op = view.operation
        if op.name != "func.func" or symbol_name(op) != ENTRY:
            continue
        arguments = op.regions[0].blocks[0].arguments
        for argument, attrs in zip(
            arguments, dict_attrs(op, "arg_attrs", len(arguments)), strict=True
        ):
            dictionary = ir.DictAttr(attrs)
            if INPUT_ATTR not in dictionary:
                continue
            if ir.StringAttr(dictionary[INPUT_ATTR]).value != TOKENS:
                continue
            shaped = ir.RankedTensorType(argument.type)
            if shaped.rank != len(_SYMBOLS):
                raise LoweringError(f"'{TOKENS}' of @{ENTRY} is {shaped}; expected rank 2")
            return [
                name if shaped.is_dynamic_dim(axis) else shaped.get_dim_size(axis)
                for axis, name in enumerate(_SYMBOLS)
            ]
    raise LoweringError(f'@{ENTRY} has no argument marked {INPUT_ATTR} = "{TOKENS}"')


def _vocabulary(module: ir.Module) -> int:
    """The vocabulary size: the last dim of the forward function's logits."""
    for view in module.body.operations:
        op = view.operation
        if op.name == "func.func" and symbol_name(op) == ENTRY:
            arguments = op.regions[0].blocks[0].arguments
            attrs = dict_attrs(op, "arg_attrs", len(arguments))
            for argument, raw in zip(arguments, attrs, strict=True):
                if "tessera.output" in ir.DictAttr(raw):
                    return int(ir.MemRefType(argument.type).shape[-1])
    raise LoweringError(f"@{ENTRY} has no output whose last dim gives the vocabulary")


def _abi(build: Build) -> str:
    """The generation functions derived (``tessera-insert-kv-cache``) where the model allows;
    outputs become caller-allocated arguments; each entry is described for the manifest."""
    problem = kv_cache_problem(build.module.operation)
    whole: ir.Module | None = None
    if problem is None:
        run_pipeline(
            build.module,
            f"builtin.module(tessera-insert-kv-cache{{block-size={KV_BLOCK_SIZE}}}, "
            "canonicalize, cse)",
        )
        # The generation entries are described on a copy that keeps their bodies: once they
        # share one (tessera-cpu-share-kv-body), their inputs reach the IR that bounds them
        # (the ids' embedding table) only through a call, which the analysis cannot follow.
        whole = ir.Module.parse(str(build.module), context=build.module.context)
        run_pipeline(whole, "builtin.module(tessera-cpu-entry-abi)")
        run_pipeline(build.module, "builtin.module(tessera-cpu-share-kv-body)")
    run_pipeline(build.module, "builtin.module(tessera-cpu-entry-abi)")
    dims = token_dims(build.module)
    limits = {"B": (1, build.options["max_batch"]), "S": (1, build.options["max_seq_len"])}
    specs = [
        describe_entry(
            build.module,
            ENTRY,
            "prefill",
            dims={TOKENS: dims},
            bounds={d: limits[d] for d in dims if isinstance(d, str)},
        )
    ]
    if whole is not None:
        vocab = _vocabulary(build.module)
        for program, tokens in ((kv_layout.PREFILL_PROGRAM, "S"), (kv_layout.DECODE_PROGRAM, 1)):
            # @decode takes one token per sequence: no S. The logits' dims are given, which
            # spares describing the shape of every output by lowering a copy of the module.
            symbols = [d for d in dims if isinstance(d, str) and (d != "S" or tokens == "S")]
            specs.append(
                describe_entry(
                    whole,
                    program,
                    program,
                    dims={kv_layout.LOGITS: [dims[0], tokens, vocab]},
                    bounds={d: limits[d] for d in symbols},
                )
            )
        cache: dict[str, Any] = kv_layout_of(build.module.operation).to_json()
    else:
        # A model the cache cannot serve still compiles for plain calls; generation says why.
        cache = {"unavailable": problem}
    build.scratch["specs"] = specs
    build.scratch["metadata"] = {kv_layout.METADATA_KEY: cache}
    return str(build.module)


def make_target(arch: str | None) -> CpuTarget:
    """``cpu`` (code for this CPU) or ``cpu:<isa>`` (code for an instruction set)."""
    return CpuTarget(arch or "host")
