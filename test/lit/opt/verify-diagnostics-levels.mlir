// --verify-diagnostics[=all|only-expected], as in mlir-opt: `all` (also the bare flag) fails on
// a diagnostic nothing expects; `only-expected` checks only that each expected one came.
// RUN: tessera-opt %s -split-input-file -verify-diagnostics=only-expected
// RUN: not tessera-opt %s -split-input-file -verify-diagnostics 2>&1 | filecheck %s
// RUN: not tessera-opt %s -split-input-file -verify-diagnostics=all 2>&1 | filecheck %s
// RUN: not tessera-opt %s -split-input-file -verify-diagnostics= 2>&1 | filecheck %s
// RUN: not tessera-opt -verify-diagnostics=some < %s 2>&1 | filecheck %s --check-prefix=LEVEL

// CHECK: verify-diagnostics-levels.mlir:21:8: error: unexpected error: 'tessera.attention.flash' op query heads (6) must be a multiple of kv heads (4)
// CHECK-NOT: expected error
// LEVEL: tessera-opt: error: -verify-diagnostics=some: expected one of all, only-expected, found 'some'
func.func @expected(%q: tensor<1x6x8x16xf32>, %k: tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32> {
  // expected-error@+1 {{query heads (6) must be a multiple of kv heads (4)}}
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.25 : f32} : (tensor<1x6x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32>
  return %0 : tensor<1x6x8x16xf32>
}

// -----

func.func @unexpected(%q: tensor<1x6x8x16xf32>, %k: tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32> {
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.25 : f32} : (tensor<1x6x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32>
  return %0 : tensor<1x6x8x16xf32>
}
