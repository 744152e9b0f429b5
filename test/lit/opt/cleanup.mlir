// RUN: tessera-opt %s --split-input-file -p 'builtin.module(canonicalize)' | filecheck %s --check-prefix=DCE
// RUN: tessera-opt %s --split-input-file -p 'builtin.module(cse)' | filecheck %s --check-prefix=CSE

// A dead pure tessera op goes with canonicalize; CSE folds two identical ones.
// DCE-LABEL: func.func @dead_norm_is_removed
// DCE-NOT: tessera.norm.rms
// DCE: return
// CSE-LABEL: func.func @dead_norm_is_removed
// CSE: tessera.norm.rms
func.func @dead_norm_is_removed(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %x : tensor<2x8xf32>
}

// -----

// CSE-LABEL: func.func @identical_norms_are_merged
// CSE: %[[N:.*]] = "tessera.norm.rms"
// CSE-NOT: tessera.norm.rms
// CSE: arith.addf %[[N]], %[[N]]
func.func @identical_norms_are_merged(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %1 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %2 = arith.addf %0, %1 : tensor<2x8xf32>
  return %2 : tensor<2x8xf32>
}

// -----

// Different attributes are different ops.
// CSE-LABEL: func.func @norms_with_other_eps_stay
// CSE-COUNT-2: tessera.norm.rms
func.func @norms_with_other_eps_stay(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %1 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-05 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %2 = arith.addf %0, %1 : tensor<2x8xf32>
  return %2 : tensor<2x8xf32>
}
