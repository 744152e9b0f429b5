// MLIR reports some errors at no location (here the verifier, on the body that
// linalg.batch_matmul builds for mixed bf16 inputs and an f16 result); tessera-opt puts such
// an error at the start of the IR it concerns, so every error has a place.
// RUN: not tessera-opt %s --split-input-file 2>&1 | filecheck %s

func.func @fine() {
  return
}

// -----

// CHECK: no-location.mlir:14:1: error: 'arith.addf' op requires the same type for all operands and results (reported without a location; shown at the start of the IR)
// CHECK-NOT: loc(unknown)
func.func @mixed_types(%a: tensor<2x4x8xbf16>, %b: tensor<2x8x4xbf16>, %c: tensor<2x4x4xf16>) -> tensor<2x4x4xf16> {
  %0 = linalg.batch_matmul ins(%a, %b : tensor<2x4x8xbf16>, tensor<2x8x4xbf16>) outs(%c : tensor<2x4x4xf16>) -> tensor<2x4x4xf16>
  return %0 : tensor<2x4x4xf16>
}
