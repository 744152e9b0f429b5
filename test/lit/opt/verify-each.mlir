// --verify-each[=true|false] (default true) turns MLIR's verifier and tessera's between passes
// on or off, with LLVM's spellings of a boolean; --no-verify-each is --verify-each=false. What
// the verifier catches with it on is tested in test/python/opt/test_opt_args.py, with a pass
// that breaks the IR.
// RUN: tessera-opt %s -cse -verify-each=false | filecheck %s
// RUN: tessera-opt %s --verify-each=0 | filecheck %s
// RUN: tessera-opt %s -verify-each=FALSE | filecheck %s
// RUN: tessera-opt %s -verify-each | filecheck %s
// RUN: tessera-opt %s -verify-each=true | filecheck %s
// RUN: tessera-opt %s --no-verify-each | filecheck %s
// RUN: not tessera-opt -cse -verify-each=maybe < %s 2>&1 | filecheck %s --check-prefix=NOT-A-BOOL
// RUN: not tessera-opt -cse -verify-each false < %s 2>&1 | filecheck %s --check-prefix=SEPARATE
// RUN: not tessera-opt -cse -verify-each=false --no-verify-each < %s 2>&1 | filecheck %s --check-prefix=TWICE

// CHECK-LABEL: func.func @norm
// CHECK: "tessera.norm.rms"
// NOT-A-BOOL: tessera-opt: error: -verify-each=maybe: expected true or false, found 'maybe'
// A boolean's value follows '=' only: a separate word is the input file, as in mlir-opt.
// SEPARATE: false: error: cannot read input: No such file or directory
// TWICE: tessera-opt: error: --no-verify-each: already set by -verify-each=false
func.func @norm(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}
