// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-gated-mlp)' | filecheck %s

// Gemma's GeGLU in bf16: three Linears in high-level form, tanh-GELU in f32 between casts.
// CHECK-LABEL: func.func @gemma_geglu_bf16_dynamic
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x32xbf16>, %[[WG:arg[0-9]+]]: tensor<64x32xbf16>, %[[WU:arg[0-9]+]]: tensor<64x32xbf16>, %[[WD:arg[0-9]+]]: tensor<32x64xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mlp.swi_glu"(%[[X]], %[[WG]], %[[WU]], %[[WD]]) {activation = "gelu_tanh"} : (tensor<?x?x32xbf16>, tensor<64x32xbf16>, tensor<64x32xbf16>, tensor<32x64xbf16>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: return %[[Y]] : tensor<?x?x32xbf16>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @gemma_geglu_bf16_dynamic(%x: tensor<?x?x32xbf16>, %wg: tensor<64x32xbf16>, %wu: tensor<64x32xbf16>, %wd: tensor<32x64xbf16>) -> tensor<?x?x32xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x32xbf16>
  %S = tensor.dim %x, %c1 : tensor<?x?x32xbf16>
  %M = arith.muli %B, %S : index
  %zero = arith.constant 0.0 : f32
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x32xbf16> into tensor<?x32xbf16>
  %eh = tensor.empty(%M) : tensor<?x64xf32>
  %acch = linalg.fill ins(%zero : f32) outs(%eh : tensor<?x64xf32>) -> tensor<?x64xf32>
  %g2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wg : tensor<?x32xbf16>, tensor<64x32xbf16>) outs(%acch : tensor<?x64xf32>) -> tensor<?x64xf32>
  %g2t = arith.truncf %g2 : tensor<?x64xf32> to tensor<?x64xbf16>
  %g = tensor.expand_shape %g2t [[0, 1], [2]] output_shape [%B, %S, 64] : tensor<?x64xbf16> into tensor<?x?x64xbf16>
  %u2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wu : tensor<?x32xbf16>, tensor<64x32xbf16>) outs(%acch : tensor<?x64xf32>) -> tensor<?x64xf32>
  %u2t = arith.truncf %u2 : tensor<?x64xf32> to tensor<?x64xbf16>
  %u = tensor.expand_shape %u2t [[0, 1], [2]] output_shape [%B, %S, 64] : tensor<?x64xbf16> into tensor<?x?x64xbf16>
  // 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))) in f32
  %gf = arith.extf %g : tensor<?x?x64xbf16> to tensor<?x?x64xf32>
  %full = tensor.empty(%B, %S) : tensor<?x?x64xf32>
  %c_half = arith.constant 0.5 : f32
  %half = linalg.fill ins(%c_half : f32) outs(%full : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  %c_one = arith.constant 1.0 : f32
  %one = linalg.fill ins(%c_one : f32) outs(%full : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  %c_k = arith.constant 0.7978845608028654 : f32
  %k = linalg.fill ins(%c_k : f32) outs(%full : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  %c_a = arith.constant 0.044715 : f32
  %a = linalg.fill ins(%c_a : f32) outs(%full : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  %g_sq = arith.mulf %gf, %gf : tensor<?x?x64xf32>
  %g_cube = arith.mulf %g_sq, %gf : tensor<?x?x64xf32>
  %t0 = arith.mulf %g_cube, %a : tensor<?x?x64xf32>
  %t1 = arith.addf %gf, %t0 : tensor<?x?x64xf32>
  %t2 = arith.mulf %t1, %k : tensor<?x?x64xf32>
  %t3 = math.tanh %t2 : tensor<?x?x64xf32>
  %t4 = arith.addf %t3, %one : tensor<?x?x64xf32>
  %t5 = arith.mulf %gf, %half : tensor<?x?x64xf32>
  %act_f = arith.mulf %t5, %t4 : tensor<?x?x64xf32>
  %act = arith.truncf %act_f : tensor<?x?x64xf32> to tensor<?x?x64xbf16>
  %h = arith.mulf %act, %u : tensor<?x?x64xbf16>
  %h2 = tensor.collapse_shape %h [[0, 1], [2]] : tensor<?x?x64xbf16> into tensor<?x64xbf16>
  %ed = tensor.empty(%M) : tensor<?x32xf32>
  %accd = linalg.fill ins(%zero : f32) outs(%ed : tensor<?x32xf32>) -> tensor<?x32xf32>
  %y2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%h2, %wd : tensor<?x64xbf16>, tensor<32x64xbf16>) outs(%accd : tensor<?x32xf32>) -> tensor<?x32xf32>
  %y2t = arith.truncf %y2 : tensor<?x32xf32> to tensor<?x32xbf16>
  %y = tensor.expand_shape %y2t [[0, 1], [2]] output_shape [%B, %S, 32] : tensor<?x32xbf16> into tensor<?x?x32xbf16>
  return %y : tensor<?x?x32xbf16>
}

// -----

// SiLU as x / (1 + exp(-x)), f32, static, the up projection on the left of the product.
// CHECK-LABEL: func.func @silu_mlp_f32_static
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<2x4x16xf32>, %[[WG:arg[0-9]+]]: tensor<24x16xf32>, %[[WU:arg[0-9]+]]: tensor<24x16xf32>, %[[WD:arg[0-9]+]]: tensor<16x24xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mlp.swi_glu"(%[[X]], %[[WG]], %[[WU]], %[[WD]]) {activation = "silu"} : (tensor<2x4x16xf32>, tensor<24x16xf32>, tensor<24x16xf32>, tensor<16x24xf32>) -> tensor<2x4x16xf32>
// CHECK-NEXT: return %[[Y]] : tensor<2x4x16xf32>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @silu_mlp_f32_static(%x: tensor<2x4x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>, %wd: tensor<16x24xf32>) -> tensor<2x4x16xf32> {
  %x2 = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x4x16xf32> into tensor<8x16xf32>
  %acch = arith.constant dense<0.0> : tensor<8x24xf32>
  %u2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wu : tensor<8x16xf32>, tensor<24x16xf32>) outs(%acch : tensor<8x24xf32>) -> tensor<8x24xf32>
  %u = tensor.expand_shape %u2 [[0, 1], [2]] output_shape [2, 4, 24] : tensor<8x24xf32> into tensor<2x4x24xf32>
  %g2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x2, %wg : tensor<8x16xf32>, tensor<24x16xf32>) outs(%acch : tensor<8x24xf32>) -> tensor<8x24xf32>
  %g = tensor.expand_shape %g2 [[0, 1], [2]] output_shape [2, 4, 24] : tensor<8x24xf32> into tensor<2x4x24xf32>
  %one = arith.constant dense<1.0> : tensor<2x4x24xf32>
  %neg = arith.negf %g : tensor<2x4x24xf32>
  %e = math.exp %neg : tensor<2x4x24xf32>
  %den = arith.addf %one, %e : tensor<2x4x24xf32>
  %act = arith.divf %g, %den : tensor<2x4x24xf32>
  %h = arith.mulf %u, %act : tensor<2x4x24xf32>
  %h2 = tensor.collapse_shape %h [[0, 1], [2]] : tensor<2x4x24xf32> into tensor<8x24xf32>
  %accd = arith.constant dense<0.0> : tensor<8x16xf32>
  %y2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%h2, %wd : tensor<8x24xf32>, tensor<16x24xf32>) outs(%accd : tensor<8x16xf32>) -> tensor<8x16xf32>
  %y = tensor.expand_shape %y2 [[0, 1], [2]] output_shape [2, 4, 16] : tensor<8x16xf32> into tensor<2x4x16xf32>
  return %y : tensor<2x4x16xf32>
}

// -----

// erf-GELU as x·0.5·(erf(x·(1/√2)) + 1) on a 2-D input (no reshapes).
// CHECK-LABEL: func.func @gelu_erf_mlp_2d
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x16xf32>, %[[WG:arg[0-9]+]]: tensor<24x16xf32>, %[[WU:arg[0-9]+]]: tensor<24x16xf32>, %[[WD:arg[0-9]+]]: tensor<16x24xf32>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mlp.swi_glu"(%[[X]], %[[WG]], %[[WU]], %[[WD]]) {activation = "gelu"} : (tensor<?x16xf32>, tensor<24x16xf32>, tensor<24x16xf32>, tensor<16x24xf32>) -> tensor<?x16xf32>
// CHECK-NEXT: return %[[Y]] : tensor<?x16xf32>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @gelu_erf_mlp_2d(%x: tensor<?x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>, %wd: tensor<16x24xf32>) -> tensor<?x16xf32> {
  %c0 = arith.constant 0 : index
  %M = tensor.dim %x, %c0 : tensor<?x16xf32>
  %zero = arith.constant 0.0 : f32
  %eh = tensor.empty(%M) : tensor<?x24xf32>
  %acch = linalg.fill ins(%zero : f32) outs(%eh : tensor<?x24xf32>) -> tensor<?x24xf32>
  %g = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x, %wg : tensor<?x16xf32>, tensor<24x16xf32>) outs(%acch : tensor<?x24xf32>) -> tensor<?x24xf32>
  %u = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%x, %wu : tensor<?x16xf32>, tensor<24x16xf32>) outs(%acch : tensor<?x24xf32>) -> tensor<?x24xf32>
  %c_r = arith.constant 0.70710678118654752 : f32
  %r = linalg.fill ins(%c_r : f32) outs(%eh : tensor<?x24xf32>) -> tensor<?x24xf32>
  %c_half = arith.constant 0.5 : f32
  %half = linalg.fill ins(%c_half : f32) outs(%eh : tensor<?x24xf32>) -> tensor<?x24xf32>
  %c_one = arith.constant 1.0 : f32
  %one = linalg.fill ins(%c_one : f32) outs(%eh : tensor<?x24xf32>) -> tensor<?x24xf32>
  %s = arith.mulf %g, %r : tensor<?x24xf32>
  %e = math.erf %s : tensor<?x24xf32>
  %e1 = arith.addf %e, %one : tensor<?x24xf32>
  %e2 = arith.mulf %e1, %half : tensor<?x24xf32>
  %act = arith.mulf %g, %e2 : tensor<?x24xf32>
  %h = arith.mulf %act, %u : tensor<?x24xf32>
  %ed = tensor.empty(%M) : tensor<?x16xf32>
  %accd = linalg.fill ins(%zero : f32) outs(%ed : tensor<?x16xf32>) -> tensor<?x16xf32>
  %y = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%h, %wd : tensor<?x24xf32>, tensor<16x24xf32>) outs(%accd : tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// After tessera-fuse-proj: the projections are tessera.mma.proj ops; SiLU as x·sigmoid(x)
// computed in bf16.
// CHECK-LABEL: func.func @gated_mlp_over_projections_bf16
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x16xbf16>, %[[WG:arg[0-9]+]]: tensor<24x16xbf16>, %[[WU:arg[0-9]+]]: tensor<24x16xbf16>, %[[WD:arg[0-9]+]]: tensor<16x24xbf16>)
// CHECK-NEXT: %[[Y:.*]] = "tessera.mlp.swi_glu"(%[[X]], %[[WG]], %[[WU]], %[[WD]]) {activation = "silu"} : (tensor<?x?x16xbf16>, tensor<24x16xbf16>, tensor<24x16xbf16>, tensor<16x24xbf16>) -> tensor<?x?x16xbf16>
// CHECK-NEXT: return %[[Y]] : tensor<?x?x16xbf16>
func.func @gated_mlp_over_projections_bf16(%x: tensor<?x?x16xbf16>, %wg: tensor<24x16xbf16>, %wu: tensor<24x16xbf16>, %wd: tensor<16x24xbf16>) -> tensor<?x?x16xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x16xbf16>
  %S = tensor.dim %x, %c1 : tensor<?x?x16xbf16>
  %g = "tessera.mma.proj"(%x, %wg) {transpose_w = true} : (tensor<?x?x16xbf16>, tensor<24x16xbf16>) -> tensor<?x?x24xbf16>
  %u = "tessera.mma.proj"(%x, %wu) {transpose_w = true} : (tensor<?x?x16xbf16>, tensor<24x16xbf16>) -> tensor<?x?x24xbf16>
  %full = tensor.empty(%B, %S) : tensor<?x?x24xbf16>
  %c_one = arith.constant 1.0 : bf16
  %one = linalg.fill ins(%c_one : bf16) outs(%full : tensor<?x?x24xbf16>) -> tensor<?x?x24xbf16>
  %neg = arith.negf %g : tensor<?x?x24xbf16>
  %e = math.exp %neg : tensor<?x?x24xbf16>
  %den = arith.addf %e, %one : tensor<?x?x24xbf16>
  %sig = arith.divf %one, %den : tensor<?x?x24xbf16>
  %act = arith.mulf %g, %sig : tensor<?x?x24xbf16>
  %h = arith.mulf %act, %u : tensor<?x?x24xbf16>
  %y = "tessera.mma.proj"(%h, %wd) {transpose_w = true} : (tensor<?x?x24xbf16>, tensor<16x24xbf16>) -> tensor<?x?x16xbf16>
  return %y : tensor<?x?x16xbf16>
}

// -----

// gate reads x, up reads z: not one gated MLP of one input.
// CHECK-LABEL: func.func @no_fusion_when_gate_and_up_read_different_inputs
// CHECK-NOT: tessera.mlp.swi_glu
// CHECK-COUNT-3: "tessera.mma.proj"
// CHECK-NOT: tessera.mlp.swi_glu
func.func @no_fusion_when_gate_and_up_read_different_inputs(%x: tensor<4x16xf32>, %z: tensor<4x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>, %wd: tensor<16x24xf32>) -> tensor<4x16xf32> {
  %g = "tessera.mma.proj"(%x, %wg) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %u = "tessera.mma.proj"(%z, %wu) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %one = arith.constant dense<1.0> : tensor<4x24xf32>
  %neg = arith.negf %g : tensor<4x24xf32>
  %e = math.exp %neg : tensor<4x24xf32>
  %den = arith.addf %one, %e : tensor<4x24xf32>
  %act = arith.divf %g, %den : tensor<4x24xf32>
  %h = arith.mulf %act, %u : tensor<4x24xf32>
  %y = "tessera.mma.proj"(%h, %wd) {transpose_w = true} : (tensor<4x24xf32>, tensor<16x24xf32>) -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

// relu(g) = max(g, 0) is none of tanh-GELU, erf-GELU, SiLU.
// CHECK-LABEL: func.func @no_fusion_when_activation_is_unknown
// CHECK-NOT: tessera.mlp.swi_glu
// CHECK: arith.maximumf
// CHECK-NOT: tessera.mlp.swi_glu
// CHECK: return
func.func @no_fusion_when_activation_is_unknown(%x: tensor<4x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>, %wd: tensor<16x24xf32>) -> tensor<4x16xf32> {
  %g = "tessera.mma.proj"(%x, %wg) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %u = "tessera.mma.proj"(%x, %wu) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %zero = arith.constant dense<0.0> : tensor<4x24xf32>
  %act = arith.maximumf %g, %zero : tensor<4x24xf32>
  %h = arith.mulf %act, %u : tensor<4x24xf32>
  %y = "tessera.mma.proj"(%h, %wd) {transpose_w = true} : (tensor<4x24xf32>, tensor<16x24xf32>) -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

// exp(-g) is returned as well, so the activation's inside must still be computed.
// CHECK-LABEL: func.func @no_fusion_when_activation_value_has_a_second_user
// CHECK-NOT: tessera.mlp.swi_glu
// CHECK: %[[E:.*]] = math.exp
// CHECK-NOT: tessera.mlp.swi_glu
// CHECK: return %{{.*}}, %[[E]]
func.func @no_fusion_when_activation_value_has_a_second_user(%x: tensor<4x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>, %wd: tensor<16x24xf32>) -> (tensor<4x16xf32>, tensor<4x24xf32>) {
  %g = "tessera.mma.proj"(%x, %wg) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %u = "tessera.mma.proj"(%x, %wu) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %one = arith.constant dense<1.0> : tensor<4x24xf32>
  %neg = arith.negf %g : tensor<4x24xf32>
  %e = math.exp %neg : tensor<4x24xf32>
  %den = arith.addf %one, %e : tensor<4x24xf32>
  %act = arith.divf %g, %den : tensor<4x24xf32>
  %h = arith.mulf %act, %u : tensor<4x24xf32>
  %y = "tessera.mma.proj"(%h, %wd) {transpose_w = true} : (tensor<4x24xf32>, tensor<16x24xf32>) -> tensor<4x16xf32>
  return %y, %e : tensor<4x16xf32>, tensor<4x24xf32>
}

// -----

// The down projection has a bias: tessera.mlp.swi_glu has none.
// CHECK-LABEL: func.func @no_fusion_when_down_projection_has_a_bias
// CHECK-NOT: tessera.mlp.swi_glu
// CHECK: "tessera.mma.proj"(%{{.*}}, %{{.*}}, %{{.*}})
// CHECK-NOT: tessera.mlp.swi_glu
func.func @no_fusion_when_down_projection_has_a_bias(%x: tensor<4x16xf32>, %wg: tensor<24x16xf32>, %wu: tensor<24x16xf32>, %wd: tensor<16x24xf32>, %bd: tensor<16xf32>) -> tensor<4x16xf32> {
  %g = "tessera.mma.proj"(%x, %wg) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %u = "tessera.mma.proj"(%x, %wu) {transpose_w = true} : (tensor<4x16xf32>, tensor<24x16xf32>) -> tensor<4x24xf32>
  %one = arith.constant dense<1.0> : tensor<4x24xf32>
  %neg = arith.negf %g : tensor<4x24xf32>
  %e = math.exp %neg : tensor<4x24xf32>
  %den = arith.addf %one, %e : tensor<4x24xf32>
  %act = arith.divf %g, %den : tensor<4x24xf32>
  %h = arith.mulf %act, %u : tensor<4x24xf32>
  %y = "tessera.mma.proj"(%h, %wd, %bd) {transpose_w = true} : (tensor<4x24xf32>, tensor<16x24xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}
