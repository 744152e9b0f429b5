// Several top-level ops are wrapped in one module, as mlir-opt does, and keep this file's name
// in their locations (before, the parser's "single top-level operation" error at line 0).
// RUN: not tessera-opt %s --split-input-file 2>/dev/null | filecheck %s
// RUN: not tessera-opt %s --split-input-file --canonicalize 2>&1 >/dev/null | filecheck %s --check-prefix=ERR

// CHECK: module {
// CHECK-NEXT: func.func @first
// CHECK: func.func @second
// CHECK: }
func.func @first() {
  return
}
func.func @second() {
  return
}

// -----

// ERR: several-top-level-ops.mlir:25:8: error: 'tessera.attention.flash' op query heads (6) must be a multiple of kv heads (4)
// ERR-NOT: error
func.func @fine() {
  return
}
func.func @gqa(%q: tensor<1x6x8x16xf32>, %k: tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32> {
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.25 : f32} : (tensor<1x6x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32>
  return %0 : tensor<1x6x8x16xf32>
}
