// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-proj)' | filecheck %s

// A bf16 torch Linear on [B, S, K]: collapse, matmul into f32, truncf, expand.
// CHECK-LABEL: func.func @linear_bf16_dynamic
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x64xbf16>, %[[W:arg[0-9]+]]: tensor<128x64xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {transpose_w = true} : (tensor<?x?x64xbf16>, tensor<128x64xbf16>) -> tensor<?x?x128xbf16>
// CHECK-NEXT: return %[[Y]] : tensor<?x?x128xbf16>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @linear_bf16_dynamic(%x: tensor<?x?x64xbf16>, %w: tensor<128x64xbf16>) -> tensor<?x?x128xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x64xbf16>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xbf16>
  %M = arith.muli %B, %S : index
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x64xbf16> into tensor<?x64xbf16>
  %e = tensor.empty(%M) : tensor<?x128xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x128xf32>) -> tensor<?x128xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<?x64xbf16>, tensor<128x64xbf16>) outs(%acc : tensor<?x128xf32>) -> tensor<?x128xf32>
  %t = arith.truncf %mm : tensor<?x128xf32> to tensor<?x128xbf16>
  %y = tensor.expand_shape %t [[0, 1], [2]] output_shape [%B, %S, 128] : tensor<?x128xbf16> into tensor<?x?x128xbf16>
  return %y : tensor<?x?x128xbf16>
}

// -----

// f32, static, with a bias added after the expand.
// CHECK-LABEL: func.func @linear_f32_static_with_bias
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<2x8x32xf32>, %[[W:arg[0-9]+]]: tensor<48x32xf32>, %[[B:arg[0-9]+]]: tensor<48xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]], %[[B]]) {transpose_w = true} : (tensor<2x8x32xf32>, tensor<48x32xf32>, tensor<48xf32>) -> tensor<2x8x48xf32>
// CHECK-NEXT: return %[[Y]] : tensor<2x8x48xf32>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @linear_f32_static_with_bias(%x: tensor<2x8x32xf32>, %w: tensor<48x32xf32>, %bias: tensor<48xf32>) -> tensor<2x8x48xf32> {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x8x32xf32> into tensor<16x32xf32>
  %acc = arith.constant dense<0.0> : tensor<16x48xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<16x32xf32>, tensor<48x32xf32>) outs(%acc : tensor<16x48xf32>) -> tensor<16x48xf32>
  %y = tensor.expand_shape %mm [[0, 1], [2]] output_shape [2, 8, 48] : tensor<16x48xf32> into tensor<2x8x48xf32>
  %e = tensor.empty() : tensor<2x8x48xf32>
  %bb = linalg.broadcast ins(%bias : tensor<48xf32>) outs(%e : tensor<2x8x48xf32>) dimensions = [0, 1]
  %z = arith.addf %bb, %y : tensor<2x8x48xf32>
  return %z : tensor<2x8x48xf32>
}

// -----

// Gemma 2's final logits: c·tanh(y / c) with c = 30 after the LM head.
// CHECK-LABEL: func.func @gemma2_logits_softcap_f32
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x64xf32>, %[[W:arg[0-9]+]]: tensor<96x64xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {softcap = 3.000000e+01 : f32, transpose_w = true} : (tensor<?x?x64xf32>, tensor<96x64xf32>) -> tensor<?x?x96xf32>
// CHECK-NEXT: return %[[Y]] : tensor<?x?x96xf32>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @gemma2_logits_softcap_f32(%x: tensor<?x?x64xf32>, %w: tensor<96x64xf32>) -> tensor<?x?x96xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x64xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xf32>
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x64xf32> into tensor<?x64xf32>
  %M = tensor.dim %x2, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%M) : tensor<?x96xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x96xf32>) -> tensor<?x96xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<?x64xf32>, tensor<96x64xf32>) outs(%acc : tensor<?x96xf32>) -> tensor<?x96xf32>
  %y = tensor.expand_shape %mm [[0, 1], [2]] output_shape [%B, %S, 96] : tensor<?x96xf32> into tensor<?x?x96xf32>
  %full = tensor.empty(%B, %S) : tensor<?x?x96xf32>
  %c30 = arith.constant 30.0 : f32
  %cap = linalg.fill ins(%c30 : f32) outs(%full : tensor<?x?x96xf32>) -> tensor<?x?x96xf32>
  %d = arith.divf %y, %cap : tensor<?x?x96xf32>
  %t = math.tanh %d : tensor<?x?x96xf32>
  %z = arith.mulf %t, %cap : tensor<?x?x96xf32>
  return %z : tensor<?x?x96xf32>
}

// -----

// bf16 logits, softcap written with the reciprocal, on a 2-D input (no reshapes).
// CHECK-LABEL: func.func @softcap_bf16_reciprocal_2d
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x64xbf16>, %[[W:arg[0-9]+]]: tensor<96x64xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {softcap = 5.000000e+01 : f32, transpose_w = true} : (tensor<?x64xbf16>, tensor<96x64xbf16>) -> tensor<?x96xbf16>
// CHECK-NEXT: return %[[Y]] : tensor<?x96xbf16>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @softcap_bf16_reciprocal_2d(%x: tensor<?x64xbf16>, %w: tensor<96x64xbf16>) -> tensor<?x96xbf16> {
  %c0 = arith.constant 0 : index
  %M = tensor.dim %x, %c0 : tensor<?x64xbf16>
  %e = tensor.empty(%M) : tensor<?x96xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x96xf32>) -> tensor<?x96xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x, %w : tensor<?x64xbf16>, tensor<96x64xbf16>) outs(%acc : tensor<?x96xf32>) -> tensor<?x96xf32>
  %y = arith.truncf %mm : tensor<?x96xf32> to tensor<?x96xbf16>
  %eb = tensor.empty(%M) : tensor<?x96xbf16>
  %cinv = arith.constant 0.02 : bf16
  %inv = linalg.fill ins(%cinv : bf16) outs(%eb : tensor<?x96xbf16>) -> tensor<?x96xbf16>
  %c50 = arith.constant 50.0 : bf16
  %cap = linalg.fill ins(%c50 : bf16) outs(%eb : tensor<?x96xbf16>) -> tensor<?x96xbf16>
  %d = arith.mulf %inv, %y : tensor<?x96xbf16>
  %t = math.tanh %d : tensor<?x96xbf16>
  %z = arith.mulf %cap, %t : tensor<?x96xbf16>
  return %z : tensor<?x96xbf16>
}

// -----

// After cse, q/k/v read one collapse of x and one zero accumulator; each still fuses, and
// the shared ops go with the last one.
// CHECK-LABEL: func.func @projections_sharing_collapse_and_accumulator
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x32xf32>, %[[WQ:arg[0-9]+]]: tensor<16x32xf32>, %[[WK:arg[0-9]+]]: tensor<16x32xf32>)
// CHECK-NEXT: %[[Q:.*]] = "tessera.mma.proj"(%[[X]], %[[WQ]]) {transpose_w = true} : (tensor<?x?x32xf32>, tensor<16x32xf32>) -> tensor<?x?x16xf32>
// CHECK-NEXT: %[[K:.*]] = "tessera.mma.proj"(%[[X]], %[[WK]]) {transpose_w = true} : (tensor<?x?x32xf32>, tensor<16x32xf32>) -> tensor<?x?x16xf32>
// CHECK-NEXT: return %[[Q]], %[[K]]
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @projections_sharing_collapse_and_accumulator(%x: tensor<?x?x32xf32>, %wq: tensor<16x32xf32>, %wk: tensor<16x32xf32>) -> (tensor<?x?x16xf32>, tensor<?x?x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x32xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x32xf32>
  %M = arith.muli %B, %S : index
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x32xf32> into tensor<?x32xf32>
  %e = tensor.empty(%M) : tensor<?x16xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x16xf32>) -> tensor<?x16xf32>
  %q2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wq : tensor<?x32xf32>, tensor<16x32xf32>) outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
  %q = tensor.expand_shape %q2 [[0, 1], [2]] output_shape [%B, %S, 16] : tensor<?x16xf32> into tensor<?x?x16xf32>
  %k2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wk : tensor<?x32xf32>, tensor<16x32xf32>) outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
  %k = tensor.expand_shape %k2 [[0, 1], [2]] output_shape [%B, %S, 16] : tensor<?x16xf32> into tensor<?x?x16xf32>
  return %q, %k : tensor<?x?x16xf32>, tensor<?x?x16xf32>
}

// -----

// An accumulator filled with 1.0 adds one to every output.
// CHECK-LABEL: func.func @no_fusion_when_accumulator_is_not_zero
// CHECK-NOT: tessera.mma.proj
// CHECK: linalg.matmul
// CHECK-NOT: tessera.mma.proj
// CHECK: return
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @no_fusion_when_accumulator_is_not_zero(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>) -> tensor<4x16xf32> {
  %acc = arith.constant dense<1.0> : tensor<4x16xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x, %w : tensor<4x32xf32>, tensor<16x32xf32>) outs(%acc : tensor<4x16xf32>) -> tensor<4x16xf32>
  return %mm : tensor<4x16xf32>
}

// -----

// The default maps compute x·w with w [K, N]: not a torch Linear.
// CHECK-LABEL: func.func @no_fusion_when_weight_is_not_transposed
// CHECK-NOT: tessera.mma.proj
// CHECK: linalg.matmul
// CHECK-NOT: tessera.mma.proj
// CHECK: return
func.func @no_fusion_when_weight_is_not_transposed(%x: tensor<4x32xf32>, %w: tensor<32x16xf32>) -> tensor<4x16xf32> {
  %acc = arith.constant dense<0.0> : tensor<4x16xf32>
  %mm = linalg.matmul ins(%x, %w : tensor<4x32xf32>, tensor<32x16xf32>) outs(%acc : tensor<4x16xf32>) -> tensor<4x16xf32>
  return %mm : tensor<4x16xf32>
}

// -----

// The collapsed [M, N] result is used as well: the expand back is not the only user.
// CHECK-LABEL: func.func @no_fusion_when_truncf_has_a_second_user
// CHECK-NOT: tessera.mma.proj
// CHECK: linalg.matmul
// CHECK: arith.truncf
// CHECK: tensor.expand_shape
// CHECK-NOT: tessera.mma.proj
// CHECK: return
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @no_fusion_when_truncf_has_a_second_user(%x: tensor<2x4x32xbf16>, %w: tensor<16x32xbf16>) -> (tensor<2x4x16xbf16>, tensor<8x16xbf16>) {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x4x32xbf16> into tensor<8x32xbf16>
  %acc = arith.constant dense<0.0> : tensor<8x16xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<8x32xbf16>, tensor<16x32xbf16>) outs(%acc : tensor<8x16xf32>) -> tensor<8x16xf32>
  %t = arith.truncf %mm : tensor<8x16xf32> to tensor<8x16xbf16>
  %y = tensor.expand_shape %t [[0, 1], [2]] output_shape [2, 4, 16] : tensor<8x16xbf16> into tensor<2x4x16xbf16>
  return %y, %t : tensor<2x4x16xbf16>, tensor<8x16xbf16>
}

// -----

// A bf16 accumulator rounds every partial sum; the fused op accumulates in f32.
// CHECK-LABEL: func.func @no_fusion_when_accumulator_is_bf16
// CHECK-NOT: tessera.mma.proj
// CHECK: linalg.matmul
// CHECK-NOT: tessera.mma.proj
// CHECK: return
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @no_fusion_when_accumulator_is_bf16(%x: tensor<4x32xbf16>, %w: tensor<16x32xbf16>) -> tensor<4x16xbf16> {
  %acc = arith.constant dense<0.0> : tensor<4x16xbf16>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x, %w : tensor<4x32xbf16>, tensor<16x32xbf16>) outs(%acc : tensor<4x16xbf16>) -> tensor<4x16xbf16>
  return %mm : tensor<4x16xbf16>
}

// -----

// 30·tanh(y / 20) is not a softcap: the projection fuses, the chain stays.
// CHECK-LABEL: func.func @no_softcap_when_the_two_constants_differ
// CHECK: %[[Y:.*]] = "tessera.mma.proj"(%arg0, %arg1) {transpose_w = true}
// CHECK: arith.divf %[[Y]]
// CHECK: math.tanh
// CHECK: arith.mulf
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @no_softcap_when_the_two_constants_differ(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>) -> tensor<4x16xf32> {
  %acc = arith.constant dense<0.0> : tensor<4x16xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x, %w : tensor<4x32xf32>, tensor<16x32xf32>) outs(%acc : tensor<4x16xf32>) -> tensor<4x16xf32>
  %c20 = arith.constant dense<20.0> : tensor<4x16xf32>
  %c30 = arith.constant dense<30.0> : tensor<4x16xf32>
  %d = arith.divf %mm, %c20 : tensor<4x16xf32>
  %t = math.tanh %d : tensor<4x16xf32>
  %z = arith.mulf %t, %c30 : tensor<4x16xf32>
  return %z : tensor<4x16xf32>
}

// -----

// q and k projections whose expand back canonicalize merged with the view into heads:
// [B·S, N] → [B, S, H, D] by [[0, 1], [2, 3]], reading one collapse of x (as after cse).
// Each becomes a projection to [B, S, N] and an expand into heads with the same sizes.
// CHECK-LABEL: func.func @merged_head_split_f32_dynamic
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x64xf32>, %[[WQ:arg[0-9]+]]: tensor<96x64xf32>, %[[WK:arg[0-9]+]]: tensor<48x64xf32>)
// CHECK: %[[B:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x?x64xf32>
// CHECK-NEXT: %[[S:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x?x64xf32>
// CHECK-NEXT: %[[Q2:.*]] = "tessera.mma.proj"(%[[X]], %[[WQ]]) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<96x64xf32>) -> tensor<?x?x96xf32>
// CHECK-NEXT: %[[Q:.*]] = tensor.expand_shape %[[Q2]] {{\[}}[0], [1], [2, 3]] output_shape [%[[B]], %[[S]], 4, 24] : tensor<?x?x96xf32> into tensor<?x?x4x24xf32>
// CHECK-NEXT: %[[K2:.*]] = "tessera.mma.proj"(%[[X]], %[[WK]]) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<48x64xf32>) -> tensor<?x?x48xf32>
// CHECK-NEXT: %[[K:.*]] = tensor.expand_shape %[[K2]] {{\[}}[0], [1], [2, 3]] output_shape [%[[B]], %[[S]], 2, 24] : tensor<?x?x48xf32> into tensor<?x?x2x24xf32>
// CHECK-NEXT: return %[[Q]], %[[K]]
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @merged_head_split_f32_dynamic(%x: tensor<?x?x64xf32>, %wq: tensor<96x64xf32>, %wk: tensor<48x64xf32>) -> (tensor<?x?x4x24xf32>, tensor<?x?x2x24xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x64xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xf32>
  %M = arith.muli %B, %S : index
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x64xf32> into tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %eq = tensor.empty(%M) : tensor<?x96xf32>
  %accq = linalg.fill ins(%zero : f32) outs(%eq : tensor<?x96xf32>) -> tensor<?x96xf32>
  %q2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wq : tensor<?x64xf32>, tensor<96x64xf32>) outs(%accq : tensor<?x96xf32>) -> tensor<?x96xf32>
  %q = tensor.expand_shape %q2 [[0, 1], [2, 3]] output_shape [%B, %S, 4, 24] : tensor<?x96xf32> into tensor<?x?x4x24xf32>
  %ek = tensor.empty(%M) : tensor<?x48xf32>
  %acck = linalg.fill ins(%zero : f32) outs(%ek : tensor<?x48xf32>) -> tensor<?x48xf32>
  %k2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wk : tensor<?x64xf32>, tensor<48x64xf32>) outs(%acck : tensor<?x48xf32>) -> tensor<?x48xf32>
  %k = tensor.expand_shape %k2 [[0, 1], [2, 3]] output_shape [%B, %S, 2, 24] : tensor<?x48xf32> into tensor<?x?x2x24xf32>
  return %q, %k : tensor<?x?x4x24xf32>, tensor<?x?x2x24xf32>
}

// -----

// The same split after a bf16 Linear (truncf before the expand), static shapes.
// CHECK-LABEL: func.func @merged_head_split_bf16_static
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<2x8x64xbf16>, %[[W:arg[0-9]+]]: tensor<96x64xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {transpose_w = true} : (tensor<2x8x64xbf16>, tensor<96x64xbf16>) -> tensor<2x8x96xbf16>
// CHECK-NEXT: %[[H:.*]] = tensor.expand_shape %[[Y]] {{\[}}[0], [1], [2, 3]] output_shape [2, 8, 4, 24] : tensor<2x8x96xbf16> into tensor<2x8x4x24xbf16>
// CHECK-NEXT: return %[[H]] : tensor<2x8x4x24xbf16>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @merged_head_split_bf16_static(%x: tensor<2x8x64xbf16>, %w: tensor<96x64xbf16>) -> tensor<2x8x4x24xbf16> {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x8x64xbf16> into tensor<16x64xbf16>
  %acc = arith.constant dense<0.0> : tensor<16x96xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<16x64xbf16>, tensor<96x64xbf16>) outs(%acc : tensor<16x96xf32>) -> tensor<16x96xf32>
  %t = arith.truncf %mm : tensor<16x96xf32> to tensor<16x96xbf16>
  %y = tensor.expand_shape %t [[0, 1], [2, 3]] output_shape [2, 8, 4, 24] : tensor<16x96xbf16> into tensor<2x8x4x24xbf16>
  return %y : tensor<2x8x4x24xbf16>
}

// -----

// A bf16 split with dynamic batch and sequence, as a traced Gemma's k projection.
// CHECK-LABEL: func.func @merged_head_split_bf16_dynamic
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x64xbf16>, %[[W:arg[0-9]+]]: tensor<32x64xbf16>)
// CHECK: %[[B:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x?x64xbf16>
// CHECK-NEXT: %[[S:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x?x64xbf16>
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {transpose_w = true} : (tensor<?x?x64xbf16>, tensor<32x64xbf16>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: %[[H:.*]] = tensor.expand_shape %[[Y]] {{\[}}[0], [1], [2, 3]] output_shape [%[[B]], %[[S]], 2, 16] : tensor<?x?x32xbf16> into tensor<?x?x2x16xbf16>
// CHECK-NEXT: return %[[H]] : tensor<?x?x2x16xbf16>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @merged_head_split_bf16_dynamic(%x: tensor<?x?x64xbf16>, %w: tensor<32x64xbf16>) -> tensor<?x?x2x16xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x64xbf16>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xbf16>
  %M = arith.muli %B, %S : index
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x64xbf16> into tensor<?x64xbf16>
  %e = tensor.empty(%M) : tensor<?x32xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x32xf32>) -> tensor<?x32xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<?x64xbf16>, tensor<32x64xbf16>) outs(%acc : tensor<?x32xf32>) -> tensor<?x32xf32>
  %t = arith.truncf %mm : tensor<?x32xf32> to tensor<?x32xbf16>
  %y = tensor.expand_shape %t [[0, 1], [2, 3]] output_shape [%B, %S, 2, 16] : tensor<?x32xbf16> into tensor<?x?x2x16xbf16>
  return %y : tensor<?x?x2x16xbf16>
}

// -----

// A single kv head (MQA): canonicalize gives the unit head dim to the rows, [[0, 1, 2], [3]].
// The unit dim does not change the reshape, so this is the split [B, S, 1, D] all the same.
// CHECK-LABEL: func.func @single_kv_head_split_with_unit_dim_in_the_rows
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x48xf32>, %[[W:arg[0-9]+]]: tensor<16x48xf32>)
// CHECK: %[[B:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x?x48xf32>
// CHECK-NEXT: %[[S:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x?x48xf32>
// CHECK-NEXT: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {transpose_w = true} : (tensor<?x?x48xf32>, tensor<16x48xf32>) -> tensor<?x?x16xf32>
// CHECK-NEXT: %[[H:.*]] = tensor.expand_shape %[[Y]] {{\[}}[0], [1], [2, 3]] output_shape [%[[B]], %[[S]], 1, 16] : tensor<?x?x16xf32> into tensor<?x?x1x16xf32>
// CHECK-NEXT: return %[[H]] : tensor<?x?x1x16xf32>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @single_kv_head_split_with_unit_dim_in_the_rows(%x: tensor<?x?x48xf32>, %w: tensor<16x48xf32>) -> tensor<?x?x1x16xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x48xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x48xf32>
  %M = arith.muli %B, %S : index
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x48xf32> into tensor<?x48xf32>
  %e = tensor.empty(%M) : tensor<?x16xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x16xf32>) -> tensor<?x16xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<?x48xf32>, tensor<16x48xf32>) outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
  %y = tensor.expand_shape %mm [[0, 1, 2], [3]] output_shape [%B, %S, 1, 16] : tensor<?x16xf32> into tensor<?x?x1x16xf32>
  return %y : tensor<?x?x1x16xf32>
}

// -----

// The expand keeps the [B·S] rows whole and splits only N ([[0], [1, 2, 3]]): x's leading
// dims are not restored, so the rows are not [B, S] and nothing fuses.
// CHECK-LABEL: func.func @no_fusion_when_expand_keeps_rows_collapsed
// CHECK-NOT: tessera.mma.proj
// CHECK: linalg.matmul
// CHECK: tensor.expand_shape %{{.*}} {{\[}}[0], [1, 2, 3]]
// CHECK-NOT: tessera.mma.proj
// CHECK: return
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @no_fusion_when_expand_keeps_rows_collapsed(%x: tensor<2x4x32xf32>, %w: tensor<48x32xf32>) -> tensor<8x2x4x6xf32> {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x4x32xf32> into tensor<8x32xf32>
  %acc = arith.constant dense<0.0> : tensor<8x48xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<8x32xf32>, tensor<48x32xf32>) outs(%acc : tensor<8x48xf32>) -> tensor<8x48xf32>
  %y = tensor.expand_shape %mm [[0], [1, 2, 3]] output_shape [8, 2, 4, 6] : tensor<8x48xf32> into tensor<8x2x4x6xf32>
  return %y : tensor<8x2x4x6xf32>
}

// -----

// The rows come back as [4, 2] from x [2, 4, K]: the same count, but not x's leading dims.
// CHECK-LABEL: func.func @no_fusion_when_expand_regroups_rows
// CHECK-NOT: tessera.mma.proj
// CHECK: linalg.matmul
// CHECK: tensor.expand_shape %{{.*}} {{\[}}[0, 1], [2, 3]] output_shape [4, 2, 6, 8]
// CHECK-NOT: tessera.mma.proj
// CHECK: return
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @no_fusion_when_expand_regroups_rows(%x: tensor<2x4x32xf32>, %w: tensor<48x32xf32>) -> tensor<4x2x6x8xf32> {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x4x32xf32> into tensor<8x32xf32>
  %acc = arith.constant dense<0.0> : tensor<8x48xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<8x32xf32>, tensor<48x32xf32>) outs(%acc : tensor<8x48xf32>) -> tensor<8x48xf32>
  %y = tensor.expand_shape %mm [[0, 1], [2, 3]] output_shape [4, 2, 6, 8] : tensor<8x48xf32> into tensor<4x2x6x8xf32>
  return %y : tensor<4x2x6x8xf32>
}

// -----

// A [D] vector added after the split into heads is a per-head-dim bias, not the Linear's
// [N] bias: the projection fuses and the add stays.
// CHECK-LABEL: func.func @head_dim_bias_after_split_is_not_folded
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<2x8x64xf32>, %[[W:arg[0-9]+]]: tensor<96x64xf32>, %[[BIAS:arg[0-9]+]]: tensor<24xf32>)
// CHECK: %[[Y:.*]] = "tessera.mma.proj"(%[[X]], %[[W]]) {transpose_w = true} : (tensor<2x8x64xf32>, tensor<96x64xf32>) -> tensor<2x8x96xf32>
// CHECK-NEXT: %[[H:.*]] = tensor.expand_shape %[[Y]] {{\[}}[0], [1], [2, 3]] output_shape [2, 8, 4, 24]
// CHECK: linalg.broadcast ins(%[[BIAS]]
// CHECK: arith.addf
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @head_dim_bias_after_split_is_not_folded(%x: tensor<2x8x64xf32>, %w: tensor<96x64xf32>, %bias: tensor<24xf32>) -> tensor<2x8x4x24xf32> {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x8x64xf32> into tensor<16x64xf32>
  %acc = arith.constant dense<0.0> : tensor<16x96xf32>
  %mm = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %w : tensor<16x64xf32>, tensor<96x64xf32>) outs(%acc : tensor<16x96xf32>) -> tensor<16x96xf32>
  %y = tensor.expand_shape %mm [[0, 1], [2, 3]] output_shape [2, 8, 4, 24] : tensor<16x96xf32> into tensor<2x8x4x24xf32>
  %e = tensor.empty() : tensor<2x8x4x24xf32>
  %bb = linalg.broadcast ins(%bias : tensor<24xf32>) outs(%e : tensor<2x8x4x24xf32>) dimensions = [0, 1, 2]
  %z = arith.addf %y, %bb : tensor<2x8x4x24xf32>
  return %z : tensor<2x8x4x24xf32>
}
