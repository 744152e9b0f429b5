// Without --verify-diagnostics, an invalid tessera op is printed as file:line:col: error and
// the exit status is non-zero.
// RUN: not tessera-opt %s 2>&1 | filecheck %s
// CHECK: verifier-error.mlir:9:8: error: 'tessera.attention.flash' op query heads (6) must be a multiple of kv heads (4)
// CHECK-NOT: Traceback

func.func @gqa(%q: tensor<1x6x8x16xf32>, %k: tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32> {
  // Six query heads cannot share four kv heads.
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.25 : f32} : (tensor<1x6x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32>
  return %0 : tensor<1x6x8x16xf32>
}
