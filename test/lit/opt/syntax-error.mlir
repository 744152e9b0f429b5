// A syntax error is reported at its line and column, with no traceback and a failing status.
// RUN: not tessera-opt %s 2>&1 | filecheck %s
// CHECK: syntax-error.mlir:8:22: error: expected SSA operand
// CHECK-NOT: Traceback

func.func @broken(%a: tensor<4xf32>) -> tensor<4xf32> {
  // The second operand is missing.
  %0 = arith.addf %a, : tensor<4xf32>
  return %0 : tensor<4xf32>
}
