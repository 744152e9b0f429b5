// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-resolve-dims, cse)' | filecheck %s

// Sizes read from a norm's and a rope's results are read from their inputs, so the two
// position broadcasts (one per rope, each sized by its own operand) become one.
// CHECK-LABEL: func.func @positions_once
// CHECK-SAME: (%[[Q:arg0]]: tensor<?x?x4x8xf32>, %[[K:arg1]]: tensor<?x?x1x8xf32>
// CHECK: %[[B:.*]] = tensor.dim %[[Q]], %c0
// CHECK-NOT: tensor.dim
// CHECK: %[[E:.*]] = tensor.empty(%[[B]], %{{.*}}) : tensor<?x?xi64>
// CHECK-NOT: tensor.empty
// CHECK: return %[[E]], %[[E]]
func.func @positions_once(%q: tensor<?x?x4x8xf32>, %k: tensor<?x?x1x8xf32>, %w: tensor<8xf32>, %s: index) -> (tensor<?x?xi64>, tensor<?x?xi64>) {
  %c0 = arith.constant 0 : index
  %nq = "tessera.norm.rms"(%q, %w) {eps = 1.0e-06 : f32} : (tensor<?x?x4x8xf32>, tensor<8xf32>) -> tensor<?x?x4x8xf32>
  %b0 = tensor.dim %nq, %c0 : tensor<?x?x4x8xf32>
  %e0 = tensor.empty(%b0, %s) : tensor<?x?xi64>
  %nq2 = "tessera.norm.rms"(%nq, %w) {eps = 1.0e-06 : f32} : (tensor<?x?x4x8xf32>, tensor<8xf32>) -> tensor<?x?x4x8xf32>
  %b1 = tensor.dim %nq2, %c0 : tensor<?x?x4x8xf32>
  %e1 = tensor.empty(%b1, %s) : tensor<?x?xi64>
  return %e0, %e1 : tensor<?x?xi64>, tensor<?x?xi64>
}

// -----

// A size read from any other op's result is left alone.
// CHECK-LABEL: func.func @other_ops_kept
// CHECK: %[[P:.*]] = "tessera.mma.proj"
// CHECK: tensor.dim %[[P]]
func.func @other_ops_kept(%x: tensor<?x8xf32>, %w: tensor<4x8xf32>) -> index {
  %c0 = arith.constant 0 : index
  %p = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
  %d = tensor.dim %p, %c0 : tensor<?x4xf32>
  return %d : index
}
