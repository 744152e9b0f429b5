// RUN: tessera-opt %s --split-input-file --tessera-fold-attention-transposes | filecheck %s

#swap = affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>

// CHECK-LABEL: func.func @reads_projections_in_place
// CHECK-NOT: linalg.generic
// CHECK: %[[O:.*]] = "tessera.attention.flash"(%arg0, %arg1, %arg2)
// CHECK-SAME: tessera.layout = "bshd"
// CHECK-SAME: -> tensor<?x?x4x8xbf16>
// CHECK-NOT: linalg.generic
// CHECK: return %[[O]]
func.func @reads_projections_in_place(%q: tensor<?x?x4x8xbf16>, %k: tensor<?x?x2x8xbf16>, %v: tensor<?x?x2x8xbf16>) -> tensor<?x?x4x8xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %b = tensor.dim %q, %c0 : tensor<?x?x4x8xbf16>
  %s = tensor.dim %q, %c1 : tensor<?x?x4x8xbf16>
  %e0 = tensor.empty(%b, %s) : tensor<?x4x?x8xbf16>
  %qt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%q : tensor<?x?x4x8xbf16>) outs(%e0 : tensor<?x4x?x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x4x?x8xbf16>
  %e1 = tensor.empty(%b, %s) : tensor<?x2x?x8xbf16>
  %kt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%k : tensor<?x?x2x8xbf16>) outs(%e1 : tensor<?x2x?x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x2x?x8xbf16>
  %vt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%v : tensor<?x?x2x8xbf16>) outs(%e1 : tensor<?x2x?x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x2x?x8xbf16>
  %o = "tessera.attention.flash"(%qt, %kt, %vt) {causal = true, scale = 0.35 : f32} : (tensor<?x4x?x8xbf16>, tensor<?x2x?x8xbf16>, tensor<?x2x?x8xbf16>) -> tensor<?x4x?x8xbf16>
  %e2 = tensor.empty(%b, %s) : tensor<?x?x4x8xbf16>
  %ot = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%o : tensor<?x4x?x8xbf16>) outs(%e2 : tensor<?x?x4x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x?x4x8xbf16>
  return %ot : tensor<?x?x4x8xbf16>
}

// -----

#swap = affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>

// The result is also used in the [B, H, S, D] layout: nothing changes.
// CHECK-LABEL: func.func @no_fold_when_the_result_has_another_user
// CHECK: linalg.generic
// CHECK: "tessera.attention.flash"(%{{.*}}, %arg1, %arg1)
// CHECK-NOT: tessera.layout
// CHECK: linalg.generic
func.func @no_fold_when_the_result_has_another_user(%q: tensor<1x3x2x8xf32>, %kv: tensor<1x2x3x8xf32>) -> (tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>) {
  %e0 = tensor.empty() : tensor<1x2x3x8xf32>
  %qt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%q : tensor<1x3x2x8xf32>) outs(%e0 : tensor<1x2x3x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    linalg.yield %in : f32
  } -> tensor<1x2x3x8xf32>
  %o = "tessera.attention.flash"(%qt, %kv, %kv) {scale = 0.35 : f32} : (tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>) -> tensor<1x2x3x8xf32>
  %e1 = tensor.empty() : tensor<1x3x2x8xf32>
  %ot = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%o : tensor<1x2x3x8xf32>) outs(%e1 : tensor<1x3x2x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    linalg.yield %in : f32
  } -> tensor<1x3x2x8xf32>
  return %ot, %o : tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>
}

// -----

#swap = affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>

// A decode step: the cache append reads the new keys and values, and paged attention the
// queries, where the projections wrote them; the casts between (one token is a static 1) go
// with the transposes.
// CHECK-LABEL: func.func @decode_step
// CHECK-NOT: linalg.generic
// CHECK: "tessera.kv.append"(%arg3, %arg4, %arg1, %[[V:.*]], %arg5, %arg6)
// CHECK-SAME: tessera.layout = "bshd"
// CHECK: %[[O:.*]] = "tessera.attention.paged"(%arg0, %arg3, %arg4, %arg5, %arg6, %arg7)
// CHECK-SAME: tessera.layout = "bshd"
// CHECK-SAME: -> tensor<?x1x4x8xbf16>
// CHECK-NOT: linalg.generic
// CHECK: return %[[O]]
func.func @decode_step(%q: tensor<?x?x4x8xbf16>, %k: tensor<?x?x2x8xbf16>, %v: tensor<?x?x2x8xbf16>, %kc: memref<?x2x16x8xbf16>, %vc: memref<?x2x16x8xbf16>, %table: tensor<?x?xi32>, %index: tensor<?xi64>, %start: tensor<?xi64>) -> tensor<?x1x4x8xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %b = tensor.dim %q, %c0 : tensor<?x?x4x8xbf16>
  %s = tensor.dim %q, %c1 : tensor<?x?x4x8xbf16>
  %e0 = tensor.empty(%b, %s) : tensor<?x4x?x8xbf16>
  %qt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%q : tensor<?x?x4x8xbf16>) outs(%e0 : tensor<?x4x?x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x4x?x8xbf16>
  %e1 = tensor.empty(%b, %s) : tensor<?x2x?x8xbf16>
  %kt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%k : tensor<?x?x2x8xbf16>) outs(%e1 : tensor<?x2x?x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x2x?x8xbf16>
  %v1 = tensor.cast %v : tensor<?x?x2x8xbf16> to tensor<?x1x2x8xbf16>
  %e2 = tensor.empty(%b) : tensor<?x2x1x8xbf16>
  %vt = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%v1 : tensor<?x1x2x8xbf16>) outs(%e2 : tensor<?x2x1x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x2x1x8xbf16>
  %vd = tensor.cast %vt : tensor<?x2x1x8xbf16> to tensor<?x2x?x8xbf16>
  "tessera.kv.append"(%kc, %vc, %kt, %vd, %table, %index) : (memref<?x2x16x8xbf16>, memref<?x2x16x8xbf16>, tensor<?x2x?x8xbf16>, tensor<?x2x?x8xbf16>, tensor<?x?xi32>, tensor<?xi64>) -> ()
  %o = "tessera.attention.paged"(%qt, %kc, %vc, %table, %index, %start) {scale = 0.35 : f32} : (tensor<?x4x?x8xbf16>, memref<?x2x16x8xbf16>, memref<?x2x16x8xbf16>, tensor<?x?xi32>, tensor<?xi64>, tensor<?xi64>) -> tensor<?x4x?x8xbf16>
  %o1 = tensor.cast %o : tensor<?x4x?x8xbf16> to tensor<?x4x1x8xbf16>
  %e3 = tensor.empty(%b) : tensor<?x1x4x8xbf16>
  %ot = linalg.generic {indexing_maps = [#swap, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%o1 : tensor<?x4x1x8xbf16>) outs(%e3 : tensor<?x1x4x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    linalg.yield %in : bf16
  } -> tensor<?x1x4x8xbf16>
  return %ot : tensor<?x1x4x8xbf16>
}
