// The last chunks hold ops no kernel takes: the first two RUN lines expect tessera-opt to fail
// on them (`not`) and check the IR of the others; the third checks the diagnostics, and that
// no other chunk reports one.
// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-lower-to-cpu{isa=avx512-bf16 threads=2})' 2>/dev/null | filecheck %s
// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-lower-to-cpu{isa=avx2 threads=1})' 2>/dev/null | filecheck %s --check-prefix=AVX2
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-lower-to-cpu{isa=avx512-bf16 threads=2})' -o /dev/null

// Every tessera op becomes a call to a tensor-level wrapper, which views the operands as
// buffers and calls a memref kernel core (kept out of line); the rules fold the op's static
// sizes and attributes into the kernel's name.

// CHECK-LABEL: func.func @proj_bf16_bias_softcap
// CHECK-NOT: tessera.mma.proj
// CHECK: %[[Y:.*]] = call @tessera_proj_r3_nt_64_96_bf16_bf16_f32_bbf16_cap30_0_{{.*}}(%arg0, %arg1, %arg2)
// CHECK: return %[[Y]]
// The core: 2 x 8 accumulators of bf16 pair dot products along K, reduced by shuffles, then the
// epilogue adds the bias, applies the softcap and stores f32.
// CHECK-LABEL: func.func private @tessera_proj_r3_nt_64_96_bf16_bf16_f32_bbf16_cap30_0_core(
// CHECK-SAME: %{{.*}}: memref<?x?x64xbf16>, %{{.*}}: memref<96x64xbf16>, %{{.*}}: memref<96xbf16>, %{{.*}}: memref<?x?x96xf32>, %{{.*}}: index, %{{.*}}: index)
// CHECK: scf.for
// CHECK: scf.for {{.*}} iter_args
// CHECK-COUNT-16: x86vector.avx512.dot {{.*}} : vector<32xbf16> -> vector<16xf32>
// CHECK: vector.shuffle
// CHECK: math.copysign
// CHECK: vector.store {{.*}} : memref<?x96xf32>, vector<8xf32>
// CHECK-LABEL: func.func private @tessera_parallel2_tessera_proj_r3_nt_64_96_bf16_bf16_f32_bbf16_cap30_0_core(
// The wrapper: buffers in, the column split across threads for large products, tensor out.
// CHECK-LABEL: func.func private @tessera_proj_r3_nt_64_96_bf16_bf16_f32_bbf16_cap30_0_tensor
// CHECK: bufferization.to_buffer %arg0 read_only
// CHECK: memref.alloc({{.*}}) : memref<?x?x96xf32>
// CHECK: scf.if
// CHECK: call @tessera_parallel2_tessera_proj_{{.*}}_core(
// CHECK: } else {
// CHECK: call @tessera_proj_{{.*}}_core({{.*}}) {no_inline}
// CHECK: bufferization.to_tensor {{.*}} restrict writable
// AVX2-LABEL: func.func private @tessera_proj_r3_nt_64_96_bf16_bf16_f32_bbf16_cap30_0_core(
// AVX2-NOT: x86vector
// AVX2: arith.extf {{.*}} : vector<8xbf16> to vector<8xf32>
// AVX2: vector.fma {{.*}} : vector<8xf32>
// AVX2-NOT: tessera_parallel
func.func @proj_bf16_bias_softcap(%x: tensor<?x?x64xbf16>, %w: tensor<96x64xbf16>, %b: tensor<96xbf16>) -> tensor<?x?x96xf32> {
  %y = "tessera.mma.proj"(%x, %w, %b) {transpose_w = true, softcap = 30.0 : f32} : (tensor<?x?x64xbf16>, tensor<96x64xbf16>, tensor<96xbf16>) -> tensor<?x?x96xf32>
  return %y : tensor<?x?x96xf32>
}

// -----

// A [K, N] weight uses the outer-product microkernel: broadcast x, rows of w, no reduction.
// CHECK-LABEL: func.func @proj_f32_kn
// CHECK: call @tessera_proj_r2_nn_40_37_f32_f32_f32_
// CHECK-LABEL: func.func private @tessera_proj_r2_nn_40_37_f32_f32_f32_core(
// CHECK: memref.load {{.*}} : memref<?x40xf32>
// CHECK: vector.broadcast {{.*}} : f32 to vector<16xf32>
// CHECK: vector.fma {{.*}} : vector<16xf32>
// CHECK-NOT: vector.shuffle
// CHECK: vector.maskedload {{.*}} : memref<40x37xf32>, vector<16xi1>, vector<16xf32> into vector<16xf32>
func.func @proj_f32_kn(%x: tensor<?x40xf32>, %w: tensor<40x37xf32>) -> tensor<?x37xf32> {
  %y = "tessera.mma.proj"(%x, %w) : (tensor<?x40xf32>, tensor<40x37xf32>) -> tensor<?x37xf32>
  return %y : tensor<?x37xf32>
}

// -----

// Attention: a loop over (batch, head) pairs, query tiles and the key tiles in the causal
// window's range; only tile-sized scratch buffers (scores 32x16, accumulator 32x64, three row
// statistics) and no buffer sized by the sequence lengths.
// CHECK-LABEL: func.func @attention_gqa_causal_window
// CHECK: call @tessera_attention_8_2_64_64_bf16_causal_s0_125_c50_0_w16_32_16_
// CHECK-LABEL: func.func private @tessera_attention_8_2_64_64_bf16_causal_s0_125_c50_0_w16_32_16_core(
// CHECK-NOT: memref.alloc({{.*}}) : memref<{{.*}}?
// CHECK: memref.alloc() : memref<32x16xf32>
// CHECK: memref.alloc() : memref<32x64xf32>
// CHECK: memref.alloc() : memref<3x32xf32>
// CHECK-NOT: memref.alloc
// CHECK: scf.for %[[PAIR:.*]] = %arg4 to %arg5
// Query head h reads kv head h / 4.
// CHECK: %[[H:.*]] = arith.remui %[[PAIR]], %c8
// CHECK: arith.divui %[[H]], %c4
// CHECK: scf.for {{.*}} step %c32
// The key tiles start at the window's first visible key and end at the causal limit.
// CHECK: %[[END:.*]] = arith.minsi {{.*}}, %dim
// CHECK: %[[FIRST:.*]] = arith.maxsi
// CHECK: scf.for {{.*}} = %[[FIRST]] to %[[END]] step %c16
// CHECK: x86vector.avx512.dot
// Softcap, then the causal and window masks.
// CHECK: math.copysign
// CHECK: vector.step : vector<8xindex>
// CHECK: arith.cmpi slt
// CHECK: arith.cmpi sge
// CHECK: arith.select {{.*}} : vector<8xi1>, vector<8xf32>
// Online softmax: running maximum, rescale factor, probabilities and running sum.
// CHECK: vector.reduction <maximumf>
// CHECK: vector.reduction <add>
// p·v accumulates over the visible keys of the tile, rescaling the accumulator by alpha.
// CHECK: vector.broadcast {{.*}} : f32 to vector<16xf32>
// CHECK: vector.fma
// The output row is acc / l, rounded to bf16.
// CHECK: arith.divf {{.*}} : vector<16xf32>
// CHECK: arith.truncf {{.*}} : vector<16xf32> to vector<16xbf16>
func.func @attention_gqa_causal_window(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>) -> tensor<?x8x?x64xbf16> {
  %o = "tessera.attention.flash"(%q, %k, %v) {causal = true, scale = 0.125 : f32, softcap = 50.0 : f32, window = 16 : i64, tile = array<i64: 32, 16, 16>} : (tensor<?x8x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x2x?x64xbf16>) -> tensor<?x8x?x64xbf16>
  return %o : tensor<?x8x?x64xbf16>
}

// -----

// Without causal there are no key bounds to compute: the key loop covers all T keys.
// CHECK-LABEL: func.func private @tessera_attention_2_2_32_32_f32_full_s0_25_64_64_core(
// CHECK: %[[T:.*]] = memref.dim %arg1, %c2
// CHECK: scf.for {{.*}} = %c0 to %[[T]] step %c64
// CHECK: vector.fma
// CHECK-NOT: x86vector
func.func @attention_mha_full(%q: tensor<?x2x?x32xf32>, %k: tensor<?x2x?x32xf32>) -> tensor<?x2x?x32xf32> {
  %o = "tessera.attention.flash"(%q, %k, %k) {scale = 0.25 : f32} : (tensor<?x2x?x32xf32>, tensor<?x2x?x32xf32>, tensor<?x2x?x32xf32>) -> tensor<?x2x?x32xf32>
  return %o : tensor<?x2x?x32xf32>
}

// -----

// RMS norm: the sum of squares in four vector accumulators, 1/sqrt in f32, then x·r·(offset + w).
// CHECK-LABEL: func.func @rms_norm
// CHECK: call @tessera_rms_r3_64_bf16_bf16_e{{.*}}_o1_0_
// CHECK-LABEL: func.func private @tessera_rms_r3_64_bf16_bf16_e{{.*}}_o1_0_core(
// CHECK: memref.collapse_shape %arg0 {{\[\[}}0, 1], [2]]
// CHECK: scf.for {{.*}} iter_args
// CHECK-COUNT-4: vector.fma
// CHECK: vector.reduction <add>
// CHECK: math.sqrt
// CHECK: arith.divf
// CHECK: arith.truncf {{.*}} : vector<16xf32> to vector<16xbf16>
func.func @rms_norm(%x: tensor<?x?x64xbf16>, %w: tensor<64xbf16>) -> tensor<?x?x64xbf16> {
  %y = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<?x?x64xbf16>, tensor<64xbf16>) -> tensor<?x?x64xbf16>
  return %y : tensor<?x?x64xbf16>
}

// -----

// RoPE: transformers' inv_freq (theta 10000, 24 rotated dims, divided by the scaling 8) as a
// constant table, cos/sin once per position, rotation of the two halves, the rest copied.
// CHECK-LABEL: func.func @rope_partial
// CHECK: memref.global "private" constant @tessera_rope_2_32_24_f32_i64_t10000_0_s8_0_inv_freq : memref<12xf32> = dense<[1.250000e-01,
// CHECK-LABEL: func.func private @tessera_rope_2_32_24_f32_i64_t10000_0_s8_0_core(
// CHECK: memref.get_global @tessera_rope_2_32_24_f32_i64_t10000_0_s8_0_inv_freq
// CHECK: arith.sitofp {{.*}} : i64 to f32
// CHECK: math.cos
// CHECK: math.sin
// CHECK: arith.subf {{.*}} : vector<16xf32>
// CHECK: arith.addf {{.*}} : vector<16xf32>
// CHECK: vector.maskedload %arg0{{.*}} vector<16xi1>
func.func @rope_partial(%x: tensor<?x?x2x32xf32>, %p: tensor<?x?xi64>) -> tensor<?x?x2x32xf32> {
  %y = "tessera.rope.apply"(%x, %p) {theta = 10000.0 : f32, scaling = 8.0 : f32, rotary_dim = 24 : i64} : (tensor<?x?x2x32xf32>, tensor<?x?xi64>) -> tensor<?x?x2x32xf32>
  return %y : tensor<?x?x2x32xf32>
}

// -----

// Lookup: each id is range-checked (an id outside the table gives zeros), the row copied and
// scaled in f32.
// CHECK-LABEL: func.func private @tessera_lookup_r2_100_48_bf16_i32_s6_9{{[0-9]*}}_core(
// CHECK: arith.index_cast {{.*}} : i32 to index
// CHECK: arith.cmpi sge
// CHECK: arith.cmpi slt
// CHECK: scf.if
// CHECK: arith.mulf {{.*}} : vector<16xf32>
// CHECK: } else {
// CHECK: vector.store
func.func @lookup_scaled(%t: tensor<100x48xbf16>, %ids: tensor<?x?xi32>) -> tensor<?x?x48xbf16> {
  %y = "tessera.tensor.lookup"(%t, %ids) {scale = 6.9 : f32} : (tensor<100x48xbf16>, tensor<?x?xi32>) -> tensor<?x?x48xbf16>
  return %y : tensor<?x?x48xbf16>
}

// -----

// The gated MLP: one kernel for gate and up (four columns of each per microtile, both read from
// the fused weight at row offsets 0 and F), its epilogue tanh-GELU(gate)·up rounded to bf16,
// then the down projection over h.
// CHECK-LABEL: func.func private @tessera_mlp_r3_64_80_bf16_bf16_bf16_gelu_tanh_gated(
// CHECK-SAME: %{{.*}}: memref<?x?x64xbf16>, %{{.*}}: memref<160x64xbf16>, %{{.*}}: memref<?x80xbf16>
// CHECK: scf.for {{.*}} step %c4
// CHECK: arith.addi {{.*}}, %c80 : index
// CHECK-COUNT-16: x86vector.avx512.dot
// CHECK: math.copysign
// CHECK: vector.store {{.*}} : memref<?x80xbf16>, vector<4xbf16>
// CHECK-LABEL: func.func private @tessera_mlp_r3_64_80_bf16_bf16_bf16_gelu_tanh_down(
// CHECK: x86vector.avx512.dot
// CHECK-LABEL: func.func private @tessera_mlp_r3_64_80_bf16_bf16_bf16_gelu_tanh_tensor
// CHECK: memref.alloc({{.*}}) : memref<?x80xbf16>
// CHECK: call @tessera_parallel2_tessera_mlp_{{.*}}_gated(
// CHECK: call @tessera_parallel2_tessera_mlp_{{.*}}_down(
func.func @mlp_fused(%x: tensor<?x?x64xbf16>, %gu: tensor<160x64xbf16>, %d: tensor<64x80xbf16>) -> tensor<?x?x64xbf16> {
  %y = "tessera.mlp.swi_glu"(%x, %gu, %d) {activation = "gelu_tanh"} : (tensor<?x?x64xbf16>, tensor<160x64xbf16>, tensor<64x80xbf16>) -> tensor<?x?x64xbf16>
  return %y : tensor<?x?x64xbf16>
}

// -----

// Regions dissolve into their function; linalg.softmax becomes reductions and elementwise ops.
// CHECK-LABEL: func.func @region_and_softmax
// CHECK-NOT: tessera.region
// CHECK: call @tessera_softmax_
func.func @region_and_softmax(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %r = "tessera.region"(%x) ({
  ^bb0(%a: tensor<2x8xf32>):
    %e = tensor.empty() : tensor<2x8xf32>
    %s = linalg.softmax dimension(1) ins(%a : tensor<2x8xf32>) outs(%e : tensor<2x8xf32>) -> tensor<2x8xf32>
    "tessera.yield"(%s) : (tensor<2x8xf32>) -> ()
  }) {label = "model.layers.0"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %r : tensor<2x8xf32>
}

// -----

// Diagnostics: what no cpu kernel takes is reported at the op.
func.func @proj_f64(%x: tensor<?x8xf64>, %w: tensor<4x8xf64>) -> tensor<?x4xf64> {
  // expected-error@+1 {{'tessera.mma.proj' op x has element type f64; the cpu kernels take f32, bf16, f16}}
  %y = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x8xf64>, tensor<4x8xf64>) -> tensor<?x4xf64>
  return %y : tensor<?x4xf64>
}

// -----

func.func @rms_dynamic_width(%x: tensor<?x?xf32>, %w: tensor<?xf32>) -> tensor<?x?xf32> {
  // expected-error@+1 {{'tessera.norm.rms' op x tensor<?x?xf32> needs a static size on axis -1 for the cpu kernel}}
  %y = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<?x?xf32>, tensor<?xf32>) -> tensor<?x?xf32>
  return %y : tensor<?x?xf32>
}
