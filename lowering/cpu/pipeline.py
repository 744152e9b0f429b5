"""The CPU target: mid-level IR → linalg/scf/vector → LLVM dialect → native code.

Stages (their names are also the dump-file names):
  ``linalg``  tessera ops replaced by calls to kernels written for their exact types and
              attributes (``tessera-lower-to-cpu``; the rules are in ``registry.RULES``)
  ``llvm``    bufferized, loops, LLVM dialect, ready for the ExecutionEngine or an object file
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.errors import LoweringError, PassError
from tessera.ir_walk import walk_ops
from tessera.pass_registry import register_pass
from tessera.pipeline import run_pipeline

from ..decompose_softmax import decompose_softmax
from ..inline_regions import inline_region

# Importing the rule modules registers their rules.
from . import (  # noqa: F401
    attention_flash,
    attention_paged,
    bf16_arith,
    bool_buffers,
    collectives,
    dynamic_expand,
    expand_math,
    kv_append,
    kv_entries,
    lookup,
    proj,
    rms_norm,
    rope,
    sample_greedy,
    strided_copies,
    swi_glu,
)
from .host import Host, target
from .parallel import define_launchers
from .registry import lower_op

# Upstream passes from tensor-level code (and the kernels' memref/vector code) to the LLVM
# dialect. Kernel cores are called with `no_inline`, so `inline` only dissolves the thin
# tensor-level wrappers; LLVM decides about the cores.
TO_LLVM = [
    "inline",
    "canonicalize",
    "convert-elementwise-to-linalg",
    # The first fusion run also gives every generic a fresh `tensor.empty` destination, sized
    # by `tensor.dim` of the producer's result; resolving those dims to the operands' leaves
    # each producer with its consumer as only user, and the second run fuses whole chains.
    "linalg-fuse-elementwise-ops",
    "resolve-shaped-type-result-dims",
    "canonicalize",
    "linalg-fuse-elementwise-ops",
    "one-shot-bufferize{bufferize-function-boundaries"
    " function-boundary-type-conversion=identity-layout-map}",
    "buffer-deallocation-pipeline",
    "tessera-lower-strided-copies",
    "tessera-lower-dynamic-expand-shapes",
    "convert-linalg-to-loops",
    "tessera-widen-bool-buffers",
    "tessera-expand-math",
    "canonicalize",
    "convert-scf-to-cf",
    "expand-strided-metadata",
    "lower-affine",
    "arith-expand",
    # Math ops with an LLVM intrinsic first (they stay vectors); libm takes the rest (erf),
    # unrolling vectors into lanes, which convert-vector-to-llvm then lowers.
    "convert-math-to-llvm",
    "convert-math-to-libm",
    "convert-vector-to-llvm{enable-x86vector=1}",
    "finalize-memref-to-llvm",
    "convert-arith-to-llvm",
    "convert-func-to-llvm",
    "convert-cf-to-llvm",
    "reconcile-unrealized-casts",
]


def to_llvm(machine: Host) -> list[str]:
    """``TO_LLVM`` for code written for ``machine``. Without avx512bf16 LLVM rounds f32 to
    bf16 by calling ``__truncsfbf2``, a compiler-runtime helper the ExecutionEngine cannot
    resolve (it aborts the process), one element at a time; and it does so for bf16
    arithmetic left in the program (an elementwise add of two bf16 tensors), which it
    promotes to f32. So bf16 arithmetic first becomes f32 arithmetic between explicit
    conversions (``tessera-round-bf16-arith``), and ``arith-expand`` then writes every
    rounding (to nearest even, NaN kept) in integer ops, which vectorise."""
    if machine.has("avx512bf16"):
        return list(TO_LLVM)
    out = []
    for p in TO_LLVM:
        if p == "arith-expand":
            out += ["tessera-round-bf16-arith", "arith-expand{include-bf16=true}"]
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class LowerToCpuOptions:
    """``isa``: the instruction set the kernels are written for, ``host`` or one of
    avx512-bf16, avx512, avx2, sse; ``threads``: cores a kernel may use (0: all of the host's)."""

    isa: str = "host"
    threads: int = 0


@register_pass("tessera-lower-to-cpu", LowerToCpuOptions)
def lower_to_cpu(module: ir.Operation, options: LowerToCpuOptions) -> None:
    """Replace tessera ops (and aggregate linalg ops) by upstream code for the host CPU
    (options: isa=host|avx512-bf16|avx512|avx2|sse, threads=N)."""
    try:
        chosen = target(options.isa, options.threads)
    except ValueError as problem:
        raise PassError(f"tessera-lower-to-cpu: {problem}") from None
    for op in walk_ops(module, pre_order=True):
        if op.name == "tessera.region":
            inline_region(op)
    for op in walk_ops(module):
        if op.name == "linalg.softmax":
            decompose_softmax(op)
        elif op.name.startswith("tessera."):
            lower_op(op, chosen)
    for op in walk_ops(module):
        if op.name == "func.func" and "sym_visibility" not in op.attributes:
            op.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get(context=op.context)


def stamp_target(module: ir.Module, target: Host) -> None:
    """Compiles every function of the LLVM-dialect ``module`` for ``target`` (see ``host.py``).

    Each ``llvm.func`` gets the CPU and features, which LLVM honours per function. The
    ExecutionEngine also wraps every function ``fn`` in a packed ``_mlir_<fn>`` that it
    compiles for the CPU it runs on, and LLVM may inline ``fn`` into it, so the entry
    functions (``llvm.emit_c_interface``, whose wrapper is what a program calls) are kept out
    of line: what runs is then all stamped code. (The wrappers of internal functions are never
    called; the ExecutionEngine insists on them.)"""
    context = module.context
    cpu = ir.StringAttr.get(target.cpu, context=context)
    features = ir.Attribute.parse(target.llvm_features(), context=context)
    out_of_line = ir.Attribute.parse('["noinline"]', context=context)
    for view in module.body.operations:
        op = view.operation
        if op.name != "llvm.func":
            continue
        op.attributes["target_cpu"] = cpu
        op.attributes["target_features"] = features
        if op.regions[0].blocks and "llvm.emit_c_interface" in op.attributes:
            op.attributes["passthrough"] = out_of_line


def lower(module: ir.Module, *, threads: int = 0, isa: str = "host") -> dict[str, str]:
    """Lowers ``module`` in place to the LLVM dialect; returns each stage's IR text.
    ``threads`` caps the cores one kernel may use (0: all of the host's); ``isa`` is the
    instruction set the code is written for (``host``, or one of ``host.ISAS``)."""
    stages: dict[str, str] = {}
    try:
        chosen = target(isa, threads)
    except ValueError as problem:
        raise LoweringError(str(problem)) from None
    options = f"isa={isa} threads={int(threads)}"
    try:
        run_pipeline(module, f"builtin.module(tessera-lower-to-cpu{{{options}}})")
    except PassError as problem:
        # The pass manager reports the rule's error as a diagnostic; give it back its kind.
        raise LoweringError(problem.message, problem.location) from None
    stages["linalg"] = str(module)
    try:
        pipeline = "builtin.module(" + ",".join(to_llvm(chosen)) + ")"
        run_pipeline(module, pipeline, verify_each=False)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(f"cpu lowering to LLVM failed: {error}") from None
    define_launchers(module)
    # The kernels were written for `chosen`; LLVM compiles each function for the CPU and
    # features it is stamped with, whatever machine the ExecutionEngine runs on.
    stamp_target(module, chosen)
    stages["llvm"] = str(module)
    return stages
