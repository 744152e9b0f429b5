// Passes given as flags, in order, as in mlir-opt: `-<pass>` or `--<pass>`, options after '='
// (`--<pass>="a=1 b=2"`), tessera's passes and pipelines and any registered upstream pass. A
// pass tied to one op is nested into it (mlir-opt's implicit nesting).
// RUN: tessera-opt %s -canonicalize='max-iterations=2 top-down=false' --cse -dump-pass-pipeline 2>&1 >/dev/null | filecheck %s --check-prefix=UPSTREAM
// RUN: tessera-opt %s --affine-scalrep -dump-pass-pipeline 2>&1 >/dev/null | filecheck %s --check-prefix=NESTED
// RUN: tessera-opt %s -tessera-schedule-async-copies=stages=1 -tessera-fuse | filecheck %s --check-prefix=TESSERA
// RUN: not tessera-opt -tessera-schedule-async-copies=stages=0 < %s 2>&1 | filecheck %s --check-prefix=TESSERA-OPTION
// RUN: not tessera-opt --tessera-schedule-async-copies="stages=0" < %s 2>&1 | filecheck %s --check-prefix=TESSERA-OPTION
// RUN: not tessera-opt -tessera-schedule-async-copies=stages=x < %s 2>&1 | filecheck %s --check-prefix=TESSERA-BAD-OPTION
// RUN: not tessera-opt -canonicalize=no-such-option=1 < %s 2>&1 | filecheck %s --check-prefix=UPSTREAM-BAD-OPTION
// RUN: not tessera-opt -canonicalise < %s 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not tessera-opt --tessera-fuse-attentio < %s 2>&1 | filecheck %s --check-prefix=UNKNOWN-TESSERA
// RUN: not tessera-opt --tessera-fuse=x=1 < %s 2>&1 | filecheck %s --check-prefix=PIPELINE-OPTION
// RUN: not tessera-opt -cse -pass-pipeline='builtin.module(cse)' < %s 2>&1 | filecheck %s --check-prefix=BOTH

// UPSTREAM: Pass Manager with 4 passes:
// UPSTREAM-NEXT: builtin.module(canonicalize{
// UPSTREAM-SAME: max-iterations=2
// UPSTREAM-SAME: top-down=false},tessera-dce,cse,tessera-cse)
// NESTED: Pass Manager with 1 passes:
// NESTED-NEXT: builtin.module(func.func(affine-scalrep))
// TESSERA-LABEL: func.func @norm
// TESSERA: "tessera.norm.rms"
// TESSERA-OPTION: <stdin>:{{[0-9]+}}:{{[0-9]+}}: error: tessera-schedule-async-copies: stages must be >= 1, got 0
// TESSERA-BAD-OPTION: tessera-opt: error: pass 'tessera-schedule-async-copies': option 'stages' expects int, found 'x'
// UPSTREAM-BAD-OPTION: tessera-opt: error: bad options for pass 'canonicalize'
// UNKNOWN: tessera-opt: error: unknown option '-canonicalise': not an option of tessera-opt nor a registered pass
// UNKNOWN-TESSERA: tessera-opt: error: unknown option '--tessera-fuse-attentio': {{.*}}; did you mean '--tessera-fuse-attention'?
// PIPELINE-OPTION: tessera-opt: error: --tessera-fuse=x=1: the pipeline 'tessera-fuse' takes no options
// BOTH: tessera-opt: error: give passes either with -pass-pipeline=builtin.module(cse) or as pass flags, not both (-cse)
func.func @norm(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}
