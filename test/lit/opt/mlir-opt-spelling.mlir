// mlir-opt's spellings: every option takes one dash or two, a value follows '=' or (for an
// option that needs one) comes as the next argument, and an argument is an option only when it
// is exactly one: no prefix of an option, no short option with its value glued on.
// RUN: tessera-opt %s -pass-pipeline='builtin.module(cse)' | filecheck %s --check-prefix=CSE
// RUN: tessera-opt %s --pass-pipeline 'builtin.module(cse)' | filecheck %s --check-prefix=CSE
// RUN: tessera-opt %s -p='builtin.module(cse)' | filecheck %s --check-prefix=CSE
// RUN: tessera-opt %s --p 'builtin.module(cse)' | filecheck %s --check-prefix=CSE
// RUN: tessera-opt %s -cse | filecheck %s --check-prefix=CSE
// RUN: tessera-opt %s | filecheck %s --check-prefix=NONE
// RUN: tessera-opt -split-input-file -allow-unregistered-dialect -cse -o=%t.out < %s && filecheck %s --check-prefix=CSE --input-file %t.out
// RUN: tessera-opt -- %s | filecheck %s --check-prefix=NONE

// Refused, each with one line that names it (stdin, so that the fuzzer takes none of them).
// RUN: not tessera-opt -pfoo < %s 2>&1 | filecheck %s --check-prefix=GLUED-P
// RUN: not tessera-opt -ofoo.mlir < %s 2>&1 | filecheck %s --check-prefix=GLUED-O
// RUN: not tessera-opt --split < %s 2>&1 | filecheck %s --check-prefix=PREFIX
// RUN: not tessera-opt -pass-pipelin='builtin.module(cse)' < %s 2>&1 | filecheck %s --check-prefix=TYPO
// RUN: not tessera-opt -split-input-file --split-input-file < %s 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not tessera-opt -allow-unregistered-dialect=false < %s 2>&1 | filecheck %s --check-prefix=UNREGISTERED
// RUN: not tessera-opt %s %s 2>&1 | filecheck %s --check-prefix=TWO-INPUTS
// RUN: not tessera-opt -o < %s 2>&1 | filecheck %s --check-prefix=NO-VALUE
// RUN: not tessera-opt --mlir-print-ir-before=cse < %s 2>&1 | filecheck %s --check-prefix=BINDINGS-LACK

// CSE-LABEL: func.func @identical_norms
// CSE: %[[N:.*]] = "tessera.norm.rms"
// CSE-NOT: tessera.norm.rms
// CSE: arith.addf %[[N]], %[[N]]
// NONE-LABEL: func.func @identical_norms
// NONE-COUNT-2: tessera.norm.rms
// GLUED-P: tessera-opt: error: unknown option '-pfoo': not an option of tessera-opt nor a registered pass
// GLUED-P-NOT: error
// GLUED-O: tessera-opt: error: unknown option '-ofoo.mlir'
// PREFIX: tessera-opt: error: unknown option '--split'
// TYPO: tessera-opt: error: unknown option '-pass-pipelin=builtin.module(cse)': {{.*}}; did you mean '--pass-pipeline'?
// TWICE: tessera-opt: error: --split-input-file: given twice (first as -split-input-file)
// UNREGISTERED: tessera-opt: error: -allow-unregistered-dialect=false: tessera-opt always allows unregistered dialects
// TWO-INPUTS: tessera-opt: error: {{.*}}mlir-opt-spelling.mlir: a second input file
// NO-VALUE: tessera-opt: error: -o: needs a value <filename>
// BINDINGS-LACK: tessera-opt: error: --mlir-print-ir-before=cse: not supported: the MLIR Python bindings print the IR before every pass or none
func.func @identical_norms(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %1 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %2 = arith.addf %0, %1 : tensor<2x8xf32>
  return %2 : tensor<2x8xf32>
}
