"""The CPU target: mid-level IR → linalg/scf → LLVM dialect → native code.

Stages (their names are also the dump-file names):
  ``linalg``  tessera ops replaced by upstream tensor code (``tessera-lower-to-cpu``)
  ``llvm``    bufferized, loops, LLVM dialect, ready for the ExecutionEngine
"""

from __future__ import annotations

from mlir import ir

from tessera.errors import LoweringError
from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass
from tessera.pipeline import run_pipeline

from ..decompose_softmax import decompose_softmax
from ..inline_regions import inline_region

# Upstream passes from tensor-level linalg to the LLVM dialect.
TO_LLVM = [
    "inline",
    "canonicalize",
    "convert-elementwise-to-linalg",
    "linalg-fuse-elementwise-ops",
    "one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map}",
    "buffer-deallocation-pipeline",
    "convert-linalg-to-loops",
    "convert-scf-to-cf",
    "expand-strided-metadata",
    "lower-affine",
    "arith-expand",
    "convert-math-to-llvm",
    "convert-math-to-libm",
    "finalize-memref-to-llvm",
    "convert-arith-to-llvm",
    "convert-func-to-llvm",
    "convert-cf-to-llvm",
    "reconcile-unrealized-casts",
]


@register_pass("tessera-lower-to-cpu")
def lower_to_cpu(module: ir.Operation, options: NoOptions) -> None:
    """Replace tessera ops (and aggregate linalg ops) by upstream tensor code for the CPU."""
    for op in walk_ops(module, pre_order=True):
        if op.name == "tessera.region":
            inline_region(op)
    for op in walk_ops(module):
        if op.name == "linalg.softmax":
            decompose_softmax(op)
        elif op.name.startswith("tessera."):
            raise LoweringError(f"no cpu lowering for '{op.name}'")
    for op in walk_ops(module):
        if op.name == "func.func" and "sym_visibility" not in op.attributes:
            op.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get(context=op.context)


def lower(module: ir.Module) -> dict[str, str]:
    """Lowers ``module`` in place to the LLVM dialect; returns each stage's IR text."""
    stages: dict[str, str] = {}
    run_pipeline(module, "builtin.module(tessera-lower-to-cpu)")
    stages["linalg"] = str(module)
    try:
        run_pipeline(module, "builtin.module(" + ",".join(TO_LLVM) + ")", verify_each=False)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(f"cpu lowering to LLVM failed: {error}") from None
    stages["llvm"] = str(module)
    return stages
