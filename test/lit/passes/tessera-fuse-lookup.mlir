// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-lookup)' | filecheck %s

// The embedding gather over dynamic [B, S] ids.
// CHECK-LABEL: func.func @embedding_f32_dynamic
// CHECK-SAME: (%[[IDS:arg[0-9]+]]: tensor<?x?xi64>, %[[T:arg[0-9]+]]: tensor<256x64xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.tensor.lookup"(%[[T]], %[[IDS]]) {scale = 1.000000e+00 : f32} : (tensor<256x64xf32>, tensor<?x?xi64>) -> tensor<?x?x64xf32>
// CHECK-NEXT: return %[[Y]] : tensor<?x?x64xf32>
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @embedding_f32_dynamic(%ids: tensor<?x?xi64>, %table: tensor<256x64xf32>) -> tensor<?x?x64xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %e = tensor.empty(%B, %S) : tensor<?x?x64xf32>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<?x?xi64>) outs(%e : tensor<?x?x64xf32>) {
  ^bb0(%id: i64, %out: f32):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 2 : index
    %v = tensor.extract %table[%i, %j] : tensor<256x64xf32>
    linalg.yield %v : f32
  } -> tensor<?x?x64xf32>
  return %g : tensor<?x?x64xf32>
}

// -----

// Gemma: the embedding times sqrt(hidden) rounded to bf16 (sqrt(64) = 8).
// CHECK-LABEL: func.func @gemma_embedding_scaled_bf16
// CHECK-SAME: (%[[IDS:arg[0-9]+]]: tensor<?x?xi64>, %[[T:arg[0-9]+]]: tensor<256x64xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.tensor.lookup"(%[[T]], %[[IDS]]) {scale = 8.000000e+00 : f32} : (tensor<256x64xbf16>, tensor<?x?xi64>) -> tensor<?x?x64xbf16>
// CHECK-NEXT: return %[[Y]] : tensor<?x?x64xbf16>
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @gemma_embedding_scaled_bf16(%ids: tensor<?x?xi64>, %table: tensor<256x64xbf16>) -> tensor<?x?x64xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %e = tensor.empty(%B, %S) : tensor<?x?x64xbf16>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<?x?xi64>) outs(%e : tensor<?x?x64xbf16>) {
  ^bb0(%id: i64, %out: bf16):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 2 : index
    %v = tensor.extract %table[%i, %j] : tensor<256x64xbf16>
    linalg.yield %v : bf16
  } -> tensor<?x?x64xbf16>
  %c8 = arith.constant 8.0 : bf16
  %normaliser = linalg.fill ins(%c8 : bf16) outs(%e : tensor<?x?x64xbf16>) -> tensor<?x?x64xbf16>
  %y = arith.mulf %g, %normaliser : tensor<?x?x64xbf16>
  return %y : tensor<?x?x64xbf16>
}

// -----

// i32 ids, static shapes, the factor a dense splat on the left (Gemma 3's inlined buffer).
// CHECK-LABEL: func.func @embedding_i32_static_dense_scale
// CHECK-SAME: (%[[IDS:arg[0-9]+]]: tensor<2x5xi32>, %[[T:arg[0-9]+]]: tensor<100x48xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.tensor.lookup"(%[[T]], %[[IDS]]) {scale = 6.92820311 : f32} : (tensor<100x48xf32>, tensor<2x5xi32>) -> tensor<2x5x48xf32>
// CHECK-NEXT: return %[[Y]] : tensor<2x5x48xf32>
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @embedding_i32_static_dense_scale(%ids: tensor<2x5xi32>, %table: tensor<100x48xf32>) -> tensor<2x5x48xf32> {
  %e = tensor.empty() : tensor<2x5x48xf32>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<2x5xi32>) outs(%e : tensor<2x5x48xf32>) {
  ^bb0(%id: i32, %out: f32):
    %j = linalg.index 2 : index
    %i = arith.index_cast %id : i32 to index
    %v = tensor.extract %table[%i, %j] : tensor<100x48xf32>
    linalg.yield %v : f32
  } -> tensor<2x5x48xf32>
  %normaliser = arith.constant dense<6.92820323> : tensor<2x5x48xf32>
  %y = arith.mulf %normaliser, %g : tensor<2x5x48xf32>
  return %y : tensor<2x5x48xf32>
}

// -----

// One-dimensional ids (a flat token list).
// CHECK-LABEL: func.func @embedding_flat_ids
// CHECK-SAME: (%[[IDS:arg[0-9]+]]: tensor<?xi32>, %[[T:arg[0-9]+]]: tensor<64x16xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.tensor.lookup"(%[[T]], %[[IDS]]) {scale = 1.000000e+00 : f32} : (tensor<64x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
// CHECK-NEXT: return %[[Y]] : tensor<?x16xbf16>
#ids = affine_map<(d0, d1) -> (d0)>
#all = affine_map<(d0, d1) -> (d0, d1)>
func.func @embedding_flat_ids(%ids: tensor<?xi32>, %table: tensor<64x16xbf16>) -> tensor<?x16xbf16> {
  %c0 = arith.constant 0 : index
  %N = tensor.dim %ids, %c0 : tensor<?xi32>
  %e = tensor.empty(%N) : tensor<?x16xbf16>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel"]} ins(%ids : tensor<?xi32>) outs(%e : tensor<?x16xbf16>) {
  ^bb0(%id: i32, %out: bf16):
    %i = arith.index_cast %id : i32 to index
    %j = linalg.index 1 : index
    %v = tensor.extract %table[%i, %j] : tensor<64x16xbf16>
    linalg.yield %v : bf16
  } -> tensor<?x16xbf16>
  return %g : tensor<?x16xbf16>
}

// -----

// The column comes from the sequence loop, not the hidden one.
// CHECK-LABEL: func.func @no_fusion_when_column_is_not_the_last_loop
// CHECK-NOT: tessera.tensor.lookup
// CHECK: linalg.generic
// CHECK: linalg.index 1
// CHECK-NOT: tessera.tensor.lookup
// CHECK: return
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @no_fusion_when_column_is_not_the_last_loop(%ids: tensor<4x8xi64>, %table: tensor<16x8xf32>) -> tensor<4x8x8xf32> {
  %e = tensor.empty() : tensor<4x8x8xf32>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<4x8xi64>) outs(%e : tensor<4x8x8xf32>) {
  ^bb0(%id: i64, %out: f32):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 1 : index
    %v = tensor.extract %table[%i, %j] : tensor<16x8xf32>
    linalg.yield %v : f32
  } -> tensor<4x8x8xf32>
  return %g : tensor<4x8x8xf32>
}

// -----

// The row read is id + 1.
// CHECK-LABEL: func.func @no_fusion_when_row_is_not_the_id
// CHECK-NOT: tessera.tensor.lookup
// CHECK: linalg.generic
// CHECK: arith.addi
// CHECK-NOT: tessera.tensor.lookup
// CHECK: return
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @no_fusion_when_row_is_not_the_id(%ids: tensor<4x8xi64>, %table: tensor<16x8xf32>) -> tensor<4x8x8xf32> {
  %e = tensor.empty() : tensor<4x8x8xf32>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<4x8xi64>) outs(%e : tensor<4x8x8xf32>) {
  ^bb0(%id: i64, %out: f32):
    %one = arith.constant 1 : index
    %i = arith.index_cast %id : i64 to index
    %i1 = arith.addi %i, %one : index
    %j = linalg.index 2 : index
    %v = tensor.extract %table[%i1, %j] : tensor<16x8xf32>
    linalg.yield %v : f32
  } -> tensor<4x8x8xf32>
  return %g : tensor<4x8x8xf32>
}

// -----

// ids read through a transposed map: out[b, s] = table[ids[s, b]].
// CHECK-LABEL: func.func @no_fusion_when_ids_are_read_transposed
// CHECK-NOT: tessera.tensor.lookup
// CHECK: linalg.generic
// CHECK-NOT: tessera.tensor.lookup
// CHECK: return
#ids_t = affine_map<(d0, d1, d2) -> (d1, d0)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @no_fusion_when_ids_are_read_transposed(%ids: tensor<4x4xi64>, %table: tensor<16x8xf32>) -> tensor<4x4x8xf32> {
  %e = tensor.empty() : tensor<4x4x8xf32>
  %g = linalg.generic {indexing_maps = [#ids_t, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<4x4xi64>) outs(%e : tensor<4x4x8xf32>) {
  ^bb0(%id: i64, %out: f32):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 2 : index
    %v = tensor.extract %table[%i, %j] : tensor<16x8xf32>
    linalg.yield %v : f32
  } -> tensor<4x4x8xf32>
  return %g : tensor<4x4x8xf32>
}

// -----

// A factor that varies per element is not a scale: the gather fuses, the multiply stays.
// CHECK-LABEL: func.func @no_scale_when_factor_is_not_a_splat
// CHECK-SAME: (%[[IDS:arg[0-9]+]]: tensor<4x8xi64>, %[[T:arg[0-9]+]]: tensor<16x8xf32>, %[[F:arg[0-9]+]]: tensor<4x8x8xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.tensor.lookup"(%[[T]], %[[IDS]]) {scale = 1.000000e+00 : f32}
// CHECK-NEXT: %[[Z:.*]] = arith.mulf %[[Y]], %[[F]]
// CHECK-NEXT: return %[[Z]]
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @no_scale_when_factor_is_not_a_splat(%ids: tensor<4x8xi64>, %table: tensor<16x8xf32>, %factor: tensor<4x8x8xf32>) -> tensor<4x8x8xf32> {
  %e = tensor.empty() : tensor<4x8x8xf32>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<4x8xi64>) outs(%e : tensor<4x8x8xf32>) {
  ^bb0(%id: i64, %out: f32):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 2 : index
    %v = tensor.extract %table[%i, %j] : tensor<16x8xf32>
    linalg.yield %v : f32
  } -> tensor<4x8x8xf32>
  %y = arith.mulf %g, %factor : tensor<4x8x8xf32>
  return %y : tensor<4x8x8xf32>
}
