// tessera-opt's command line, following mlir-opt.
// RUN: tessera-opt %s | filecheck %s --check-prefix=ROUNDTRIP
// RUN: cat %s | tessera-opt - | filecheck %s --check-prefix=ROUNDTRIP
// RUN: tessera-opt %s --canonicalize -o %t.out && filecheck %s --check-prefix=ROUNDTRIP --input-file %t.out
// RUN: tessera-opt %s -p 'builtin.module(canonicalize, func.func(cse), tessera-verify)' | filecheck %s --check-prefix=ROUNDTRIP
// RUN: tessera-opt %s --canonicalize --mlir-print-ir-after-all 2>&1 >/dev/null | filecheck %s --check-prefix=AFTER-ALL
// RUN: not tessera-opt %s -p 'builtin.module(tessera-fuse-everything)' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not tessera-opt %s -p 'builtin.module(canonicalise)' 2>&1 | filecheck %s --check-prefix=UPSTREAM-UNKNOWN
// RUN: not tessera-opt %s -p 'builtin.module(func.func(tessera-fuse-attention))' 2>&1 | filecheck %s --check-prefix=NESTED
// RUN: not tessera-opt %s -p 'builtin.module(canonicalize{no-such-option=1})' 2>&1 | filecheck %s --check-prefix=OPTION
// RUN: not tessera-opt %s.missing 2>&1 | filecheck %s --check-prefix=MISSING
// RUN: tessera-opt --list-passes | filecheck %s --check-prefix=LIST

// ROUNDTRIP-LABEL: func.func @norm
// ROUNDTRIP: "tessera.norm.rms"(%{{.*}}, %{{.*}}) {eps = 9.99999997E-7 : f32}
// AFTER-ALL: IR Dump After Canonicalizer (canonicalize)
// AFTER-ALL: IR Dump After tessera-dce (tessera-dce)
// UNKNOWN: tessera-opt: error: unknown pass 'tessera-fuse-everything'
// UNKNOWN-NOT: Traceback
// UPSTREAM-UNKNOWN: tessera-opt: error: unknown pass 'canonicalise'
// NESTED: tessera-opt: error: tessera passes run on the whole module; move them out of 'func.func(...)'
// OPTION: tessera-opt: error: bad options for pass 'canonicalize'
// MISSING: cli.mlir.missing: error: cannot read input: No such file or directory
// LIST: --tessera-fuse-attention
// LIST: --tessera-fuse {{.*}}tessera-fuse-attention, tessera-fuse-rope
func.func @norm(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}
