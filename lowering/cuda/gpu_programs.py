"""The programs a GPU target builds from one module, shared by the CUDA and ROCm targets.

``plan_stage`` (the ``plan`` stage) derives the generation functions where the model allows
(``tessera-insert-kv-cache``: ``@prefill_kv`` and ``@decode`` next to ``@forward``), inlines
the regions, fuses elementwise code into generics and plans each function's memory.
``build_programs`` (the ``gpu`` stage) lowers every function's ops into one kernel module, so
the three programs share each kernel they have in common; ``program_specs`` turns each
function's launches into a manifest program: ``@forward`` is ``prefill``, the cache functions
keep their names, and their KV caches become ``state`` buffers that the runtime allocates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlir import ir

from tessera.errors import LoweringError, PassError
from tessera.ir_walk import walk_ops
from tessera.passes.derive_greedy_decode import greedy_decode_problem
from tessera.passes.insert_kv_cache import kv_cache_problem
from tessera.passes.kv_signature import (
    DIMS_ATTR,
    INPUT_ATTR,
    STATE_ATTR,
    function_named,
    kv_layout_of,
    read_dims,
)
from tessera.passes.plan_memory import MemoryPlan, memory_plan
from tessera.passes.shape_exprs import Poly, shape_exprs
from tessera.pipeline import run_pipeline
from tessera.runtime import kv_layout
from tessera.runtime.manifest import BufferSpec, ProgramSpec, SymbolSpec, TensorSpec
from tessera.target import Build

from . import tuning
from .attention_layout import fold_attention_transposes
from .kernel import KernelModule
from .norm_layout import fold_norm_transposes
from .plan import LaunchPlan, build_launches
from .weight_prefetch import add_weight_prefetches

ENTRY = "forward"
# Tokens per KV-cache block (the CPU target's size: one artifact layout for every target).
KV_BLOCK_SIZE = 16
# Elementwise ops become generics and fuse; named linalg ops that only move data become
# generics too, so one kernel generator covers all of them.
PREPARE = (
    "builtin.module(func.func(convert-elementwise-to-linalg, linalg-generalize-named-ops),"
    "linalg-fuse-elementwise-ops, canonicalize, cse, tessera-dce, tessera-cse,"
    "resolve-shaped-type-result-dims, canonicalize, linalg-fuse-elementwise-ops, canonicalize,"
    "tessera-dce)"
)
# The batch a decode step's GEMMs are built for: GEMVs reading each weight once for up to
# this many sequences (more re-read the weights once per this many rows; still correct).
DECODE_ROWS = 8
_WEIGHT = "tessera.weight"


@dataclass(frozen=True)
class Planned:
    """One function to run as a program: its name in the manifest, its symbol, its plan."""

    program: str
    symbol: str
    plan: MemoryPlan


def function(module: ir.Module, symbol: str) -> ir.Operation:
    found = function_named(module.operation, symbol)
    if found is None:
        raise LoweringError(f"the module has no func.func @{symbol}")
    return found


def _pipeline(module: ir.Module, pipeline: str) -> None:
    try:
        run_pipeline(module, pipeline, verify_each=False)
    except PassError as problem:
        raise LoweringError(problem.message, problem.location) from None


def plan_stage(build: Build, *, generation: bool, greedy_head: bool) -> str:
    """Derives the cache functions (``generation``, where the model allows) and, with
    ``greedy_head``, the greedy decode step whose LM head chooses the token (where the head
    fuses); inlines regions, fuses elementwise code into generics and plans every function's
    memory."""
    from tessera.lowering.inline_regions import inline_region

    module = build.module
    problem = kv_cache_problem(module.operation) if generation else "not built for this target"
    greedy = False
    if problem is None:
        _pipeline(
            module,
            f"builtin.module(tessera-insert-kv-cache{{block-size={KV_BLOCK_SIZE}}}, "
            "canonicalize, cse)",
        )
        build.scratch["kv_cache"] = kv_layout_of(module.operation).to_json()
        # Without it, greedy generation chooses from the decode step's logits.
        greedy = greedy_head and greedy_decode_problem(module.operation) is None
        if greedy:
            _pipeline(module, "builtin.module(tessera-derive-greedy-decode)")
    else:
        # A model the cache cannot serve still compiles for plain calls; generation says why.
        build.scratch["kv_cache"] = {"unavailable": problem}
    for op in walk_ops(module.operation, pre_order=True):
        if op.name == "tessera.region":
            inline_region(op)
    _pipeline(module, PREPARE)
    fold_norm_transposes(module)
    fold_attention_transposes(module)
    forward = function(module, ENTRY)
    with module.context:
        # The cache functions name their arguments' dims themselves (tessera.dims on each).
        forward.attributes[DIMS_ATTR] = ir.DictAttr.get(
            {"input_ids": ir.ArrayAttr.get([ir.StringAttr.get("B"), ir.StringAttr.get("S")])}
        )
    _pipeline(module, "builtin.module(tessera-plan-memory)")
    names = [(ENTRY, "prefill")]
    if problem is None:
        names += [(kv_layout.PREFILL_PROGRAM,) * 2, (kv_layout.DECODE_PROGRAM,) * 2]
        if greedy:
            names.append((kv_layout.GREEDY_DECODE_PROGRAM,) * 2)
    build.scratch["planned"] = [
        Planned(program, symbol, memory_plan(function(module, symbol))) for symbol, program in names
    ]
    return str(module)


def build_programs(build: Build, kernels: KernelModule) -> dict[str, LaunchPlan]:
    """Every planned function's launches, its kernels added to ``kernels`` (shared)."""
    launches: dict[str, LaunchPlan] = {}
    infos: dict[str, Any] = {}
    tuned = tuning.load(kernels.arch)
    for planned in build.scratch["planned"]:
        func = function(build.module, planned.symbol)
        decode = planned.program in (kv_layout.DECODE_PROGRAM, kv_layout.GREEDY_DECODE_PROGRAM)
        rows = DECODE_ROWS if decode and kernels.device.decode_gemv else None
        launch_plan = LaunchPlan(
            kernels, planned.plan, shape_exprs(func), infos=infos, rows_hint=rows, tuning=tuned
        )
        build_launches(func, launch_plan)
        add_weight_prefetches(launch_plan)
        launches[planned.program] = launch_plan
    return launches


def program_specs(build: Build, launches: Mapping[str, LaunchPlan]) -> tuple[ProgramSpec, ...]:
    return tuple(
        _program(build, planned, launches[planned.program]) for planned in build.scratch["planned"]
    )


def metadata(build: Build) -> dict[str, Any]:
    """The manifest metadata the plan stage adds: the KV-cache layout (or why there is none)."""
    return {kv_layout.METADATA_KEY: build.scratch["kv_cache"]}


def _dims(attrs: ir.DictAttr, type_: ir.Type, fallback: tuple[str, ...]) -> tuple[int | str, ...]:
    """An argument's dims: its ``tessera.dims`` (the cache functions name them), else the
    type's static sizes with ``fallback``'s names for the dynamic ones."""
    if DIMS_ATTR in attrs:
        try:
            return read_dims(attrs[DIMS_ATTR], "an argument")
        except ValueError as problem:
            raise LoweringError(str(problem)) from None
    shaped = ir.ShapedType(type_)
    return tuple(
        fallback[axis] if shaped.is_dynamic_dim(axis) else shaped.get_dim_size(axis)
        for axis in range(shaped.rank)
    )


def _program(build: Build, planned: Planned, launch_plan: LaunchPlan) -> ProgramSpec:
    func = function(build.module, planned.symbol)
    vocab_rows = _vocab_rows(func)
    inputs, weights, state = [], [], []
    arguments = func.regions[0].blocks[0].arguments
    arg_attrs = ir.ArrayAttr(func.attributes["arg_attrs"])
    for index, argument in enumerate(arguments):
        attrs = ir.DictAttr(arg_attrs[index])
        element = str(ir.ShapedType(argument.type).element_type)
        if INPUT_ATTR in attrs:
            name = ir.StringAttr(attrs[INPUT_ATTR]).value
            shape = _dims(attrs, argument.type, ("B", "S"))
            bounded = name == kv_layout.INPUT_IDS and vocab_rows is not None
            inputs.append(
                TensorSpec(
                    name, element, shape, (0, vocab_rows) if bounded and vocab_rows else None
                )
            )
        elif _WEIGHT in attrs:
            shape = tuple(ir.ShapedType(argument.type).shape)
            weights.append(TensorSpec(ir.StringAttr(attrs[_WEIGHT]).value, element, shape))
        elif STATE_ATTR in attrs:
            name = ir.StringAttr(attrs[STATE_ATTR]).value
            state.append(BufferSpec(name, "state", element, _dims(attrs, argument.type, ())))
    outputs = [
        TensorSpec(str(value.name), value.dtype, tuple(_dim(d) for d in value.shape))
        for value in planned.plan.values
        if value.kind == "output"
    ]
    arena = Poly.parse(planned.plan.arena_bytes) + launch_plan.scratch
    return ProgramSpec(
        planned.program,
        _symbols(build.options, inputs, state),
        tuple(inputs),
        tuple(weights),
        tuple(outputs),
        tuple(launch_plan.steps),
        (*state, *launch_plan.buffers),
        str(arena),
    )


def _symbols(
    options: Mapping[str, Any], inputs: list[TensorSpec], state: list[BufferSpec]
) -> tuple[SymbolSpec, ...]:
    """Every symbol the inputs and state name, in order of appearance; B and S bounded by the
    compile's limits."""
    limits = {"B": options.get("max_batch"), "S": options.get("max_seq_len")}
    seen: dict[str, SymbolSpec] = {}
    for shape in [spec.shape for spec in inputs] + [spec.shape for spec in state]:
        for dim in shape:
            if isinstance(dim, str) and dim not in seen:
                seen[dim] = SymbolSpec(dim, 1, limits.get(dim))
    return tuple(seen.values())


def _dim(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _vocab_rows(func: ir.Operation) -> int | None:
    """Rows of the table the token ids index (the runtime rejects ids outside it)."""
    for op in walk_ops(func):
        if op.name == "tessera.tensor.lookup":
            return int(ir.ShapedType(op.operands[0].type).shape[0])
    return None
