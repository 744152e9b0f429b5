// RUN: tessera-opt %s --split-input-file --tessera-fold-norm-transposes | filecheck %s

#swap = affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>

// Gemma 3's q_norm: transpose to [B, H, S, D], norm, transpose back. The norm reads the
// projection's layout, both copies go, and the shapes read from the norm's result swap axes.
// CHECK-LABEL: func.func @norms_in_the_projection_layout
// CHECK-NOT: linalg.generic
// CHECK: %[[N:.*]] = "tessera.norm.rms"(%arg0, %arg1)
// CHECK-SAME: (tensor<?x?x4x8xbf16>, tensor<8xbf16>) -> tensor<?x?x4x8xbf16>
// CHECK-NOT: linalg.generic
// CHECK: %[[C1:.*]] = arith.constant 1 : index
// CHECK: %[[S:.*]] = tensor.dim %[[N]], %[[C1]]
// CHECK: return %[[N]], %[[S]]
func.func @norms_in_the_projection_layout(%q: tensor<?x?x4x8xbf16>, %w: tensor<8xbf16>) -> (tensor<?x?x4x8xbf16>, index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %b = tensor.dim %q, %c0 : tensor<?x?x4x8xbf16>
  %s = tensor.dim %q, %c1 : tensor<?x?x4x8xbf16>
  %e0 = tensor.empty(%b, %s) : tensor<?x4x?x8xbf16>
  %qt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%q : tensor<?x?x4x8xbf16>) outs(%e0 : tensor<?x4x?x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x4x?x8xbf16>
  %n = "tessera.norm.rms"(%qt, %w) {eps = 1.0e-06 : f32, offset = 1.0 : f32} : (tensor<?x4x?x8xbf16>, tensor<8xbf16>) -> tensor<?x4x?x8xbf16>
  %b2 = tensor.dim %n, %c0 : tensor<?x4x?x8xbf16>
  %c2 = arith.constant 2 : index
  %s2 = tensor.dim %n, %c2 : tensor<?x4x?x8xbf16>
  %e1 = tensor.empty(%b2, %s2) : tensor<?x?x4x8xbf16>
  %back = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%n : tensor<?x4x?x8xbf16>) outs(%e1 : tensor<?x?x4x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x?x4x8xbf16>
  %seq = tensor.dim %n, %c2 : tensor<?x4x?x8xbf16>
  return %back, %seq : tensor<?x?x4x8xbf16>, index
}

// -----

#swap = affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>

// The normed [B, H, S, D] tensor is also read as it is: nothing changes.
// CHECK-LABEL: func.func @no_fold_when_the_norm_has_another_user
// CHECK: linalg.generic
// CHECK: "tessera.norm.rms"(%{{.*}}, %arg1) {{.*}} -> tensor<1x2x3x8xf32>
// CHECK: linalg.generic
func.func @no_fold_when_the_norm_has_another_user(%q: tensor<1x3x2x8xf32>, %w: tensor<8xf32>) -> (tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>) {
  %e0 = tensor.empty() : tensor<1x2x3x8xf32>
  %qt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%q : tensor<1x3x2x8xf32>) outs(%e0 : tensor<1x2x3x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    linalg.yield %in : f32
  } -> tensor<1x2x3x8xf32>
  %n = "tessera.norm.rms"(%qt, %w) {eps = 1.0e-06 : f32} : (tensor<1x2x3x8xf32>, tensor<8xf32>) -> tensor<1x2x3x8xf32>
  %e1 = tensor.empty() : tensor<1x3x2x8xf32>
  %back = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%n : tensor<1x2x3x8xf32>) outs(%e1 : tensor<1x3x2x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    linalg.yield %in : f32
  } -> tensor<1x3x2x8xf32>
  return %back, %n : tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>
}

// -----

#swap = affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>

// A norm whose input is no head transpose stays.
// CHECK-LABEL: func.func @no_fold_without_a_transpose_before
// CHECK: "tessera.norm.rms"(%arg0, %arg1)
// CHECK: linalg.generic
func.func @no_fold_without_a_transpose_before(%q: tensor<1x2x3x8xf32>, %w: tensor<8xf32>) -> tensor<1x3x2x8xf32> {
  %n = "tessera.norm.rms"(%q, %w) {eps = 1.0e-06 : f32} : (tensor<1x2x3x8xf32>, tensor<8xf32>) -> tensor<1x2x3x8xf32>
  %e1 = tensor.empty() : tensor<1x3x2x8xf32>
  %back = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%n : tensor<1x2x3x8xf32>) outs(%e1 : tensor<1x3x2x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    linalg.yield %in : f32
  } -> tensor<1x3x2x8xf32>
  return %back : tensor<1x3x2x8xf32>
}
