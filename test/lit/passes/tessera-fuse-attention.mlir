// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-attention)' | filecheck %s
// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-attention)' -o /dev/null 2>&1 | filecheck %s --check-prefix=QUIET --allow-empty

// The pass prints nothing, whether a chain fuses or not.
// QUIET-NOT: {{.}}

// f32 MHA with dynamic batch and sequence inside a decoder region; the additive causal mask
// is made once in the function and broadcast over heads. Everything between q, k, v and the
// result goes, the mask generic included.
// CHECK-LABEL: func.func @mha_causal_f32_in_region
// CHECK-SAME: (%[[Q:.*]]: tensor<?x4x?x16xf32>, %[[K:.*]]: tensor<?x4x?x16xf32>, %[[V:.*]]: tensor<?x4x?x16xf32>)
// CHECK-NOT: linalg.generic
// CHECK: "tessera.region"
// CHECK-NEXT: ^bb0(%[[X:.*]]: tensor<?x4x?x16xf32>):
// CHECK-NEXT: %[[O:.*]] = "tessera.attention.flash"(%[[X]], %[[K]], %[[V]]) {causal = true, scale = 2.500000e-01 : f32, tile = array<i64: 64, 64, 16>} : (tensor<?x4x?x16xf32>, tensor<?x4x?x16xf32>, tensor<?x4x?x16xf32>) -> tensor<?x4x?x16xf32>
// CHECK-NEXT: "tessera.yield"(%[[O]])
// CHECK-NOT: linalg.
func.func @mha_causal_f32_in_region(%q: tensor<?x4x?x16xf32>, %k: tensor<?x4x?x16xf32>, %v: tensor<?x4x?x16xf32>) -> tensor<?x4x?x16xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.000000e+00 : f32
  %B = tensor.dim %q, %c0 : tensor<?x4x?x16xf32>
  %S = tensor.dim %q, %c2 : tensor<?x4x?x16xf32>
  %BH = arith.muli %B, %c4 : index
  %m0 = tensor.empty(%B, %S, %S) : tensor<?x1x?x?xf32>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} outs(%m0 : tensor<?x1x?x?xf32>) {
  ^bb0(%out: f32):
    %i = linalg.index 2 : index
    %j = linalg.index 3 : index
    %ok = arith.cmpi sle, %j, %i : index
    %allow = arith.constant 0.000000e+00 : f32
    %block = arith.constant -3.40282347E+38 : f32
    %r = arith.select %ok, %allow, %block : f32
    linalg.yield %r : f32
  } -> tensor<?x1x?x?xf32>
  %m3 = tensor.collapse_shape %m [[0, 1], [2], [3]] : tensor<?x1x?x?xf32> into tensor<?x?x?xf32>
  %out = "tessera.region"(%q) ({
  ^bb0(%x: tensor<?x4x?x16xf32>):
    %kt0 = tensor.empty(%B, %S) : tensor<?x4x16x?xf32>
    %kt = linalg.transpose ins(%k : tensor<?x4x?x16xf32>) outs(%kt0 : tensor<?x4x16x?xf32>) permutation = [0, 1, 3, 2]
    %q3 = tensor.collapse_shape %x [[0, 1], [2], [3]] : tensor<?x4x?x16xf32> into tensor<?x?x16xf32>
    %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x4x16x?xf32> into tensor<?x16x?xf32>
    %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
    %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
    %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x16xf32>, tensor<?x16x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
    %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 4, %S, %S] : tensor<?x?x?xf32> into tensor<?x4x?x?xf32>
    %e4 = tensor.empty(%B, %S, %S) : tensor<?x4x?x?xf32>
    %cscale = arith.constant 2.500000e-01 : f32
    %scale = linalg.fill ins(%cscale : f32) outs(%e4 : tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
    %ss = arith.mulf %s, %scale : tensor<?x4x?x?xf32>
    %mb = linalg.broadcast ins(%m3 : tensor<?x?x?xf32>) outs(%e4 : tensor<?x4x?x?xf32>) dimensions = [1]
    %sm = arith.addf %ss, %mb : tensor<?x4x?x?xf32>
    %p = linalg.softmax dimension(3) ins(%sm : tensor<?x4x?x?xf32>) outs(%e4 : tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
    %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<?x4x?x?xf32> into tensor<?x?x?xf32>
    %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<?x4x?x16xf32> into tensor<?x?x16xf32>
    %o0 = tensor.empty(%BH, %S) : tensor<?x?x16xf32>
    %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
    %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xf32>, tensor<?x?x16xf32>) outs(%o1 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
    %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 4, %S, 16] : tensor<?x?x16xf32> into tensor<?x4x?x16xf32>
    "tessera.yield"(%o) : (tensor<?x4x?x16xf32>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64, kind = "global"} : (tensor<?x4x?x16xf32>) -> tensor<?x4x?x16xf32>
  return %out : tensor<?x4x?x16xf32>
}

// -----

// Gemma 2 in bf16: f32 accumulators with truncf, GQA (2 kv heads repeated twice), softcap
// 50 written as /c, tanh, ×c, an additive sliding-window mask (window 3) and the softmax in
// f32 between extf and truncf. The flash op takes k and v before the repeat.
// CHECK-LABEL: func.func @gqa_window_softcap_bf16
// CHECK-SAME: (%[[Q:.*]]: tensor<?x4x?x16xbf16>, %[[K:.*]]: tensor<?x2x?x16xbf16>, %[[V:.*]]: tensor<?x2x?x16xbf16>)
// CHECK-NEXT: %[[O:.*]] = "tessera.attention.flash"(%[[Q]], %[[K]], %[[V]]) {causal = true, scale = 6.250000e-02 : f32, softcap = 5.000000e+01 : f32, tile = array<i64: 64, 64, 16>, window = 3 : i64} : (tensor<?x4x?x16xbf16>, tensor<?x2x?x16xbf16>, tensor<?x2x?x16xbf16>) -> tensor<?x4x?x16xbf16>
// CHECK-NEXT: return %[[O]]
func.func @gqa_window_softcap_bf16(%q: tensor<?x4x?x16xbf16>, %k: tensor<?x2x?x16xbf16>, %v: tensor<?x2x?x16xbf16>) -> tensor<?x4x?x16xbf16> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.000000e+00 : f32
  %B = tensor.dim %q, %c0 : tensor<?x4x?x16xbf16>
  %S = tensor.dim %q, %c2 : tensor<?x4x?x16xbf16>
  %BH = arith.muli %B, %c4 : index
  %kb0 = tensor.empty(%B, %S) : tensor<?x2x2x?x16xbf16>
  %kb = linalg.broadcast ins(%k : tensor<?x2x?x16xbf16>) outs(%kb0 : tensor<?x2x2x?x16xbf16>) dimensions = [2]
  %kr = tensor.collapse_shape %kb [[0], [1, 2], [3], [4]] : tensor<?x2x2x?x16xbf16> into tensor<?x4x?x16xbf16>
  %vb = linalg.broadcast ins(%v : tensor<?x2x?x16xbf16>) outs(%kb0 : tensor<?x2x2x?x16xbf16>) dimensions = [2]
  %vr = tensor.collapse_shape %vb [[0], [1, 2], [3], [4]] : tensor<?x2x2x?x16xbf16> into tensor<?x4x?x16xbf16>
  %kt0 = tensor.empty(%B, %S) : tensor<?x4x16x?xbf16>
  %kt = linalg.transpose ins(%kr : tensor<?x4x?x16xbf16>) outs(%kt0 : tensor<?x4x16x?xbf16>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x4x?x16xbf16> into tensor<?x?x16xbf16>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x4x16x?xbf16> into tensor<?x16x?xbf16>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x16xbf16>, tensor<?x16x?xbf16>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s3 = arith.truncf %s2 : tensor<?x?x?xf32> to tensor<?x?x?xbf16>
  %s = tensor.expand_shape %s3 [[0, 1], [2], [3]] output_shape [%B, 4, %S, %S] : tensor<?x?x?xbf16> into tensor<?x4x?x?xbf16>
  %e4 = tensor.empty(%B, %S, %S) : tensor<?x4x?x?xbf16>
  %cscale = arith.constant 6.250000e-02 : bf16
  %scale = linalg.fill ins(%cscale : bf16) outs(%e4 : tensor<?x4x?x?xbf16>) -> tensor<?x4x?x?xbf16>
  %ss = arith.mulf %s, %scale : tensor<?x4x?x?xbf16>
  %ccap = arith.constant 5.000000e+01 : bf16
  %cap = linalg.fill ins(%ccap : bf16) outs(%e4 : tensor<?x4x?x?xbf16>) -> tensor<?x4x?x?xbf16>
  %t1 = arith.divf %ss, %cap : tensor<?x4x?x?xbf16>
  %t2 = math.tanh %t1 : tensor<?x4x?x?xbf16>
  %t3 = arith.mulf %t2, %cap : tensor<?x4x?x?xbf16>
  %m0 = tensor.empty(%B, %S, %S) : tensor<?x1x?x?xbf16>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} outs(%m0 : tensor<?x1x?x?xbf16>) {
  ^bb0(%out: bf16):
    %i = linalg.index 2 : index
    %j = linalg.index 3 : index
    %past = arith.cmpi sle, %j, %i : index
    %d = arith.subi %i, %j : index
    %near = arith.cmpi slt, %d, %c3 : index
    %ok = arith.andi %past, %near : i1
    %allow = arith.constant 0.000000e+00 : bf16
    %block = arith.constant -3.38953139E+38 : bf16
    %r = arith.select %ok, %allow, %block : bf16
    linalg.yield %r : bf16
  } -> tensor<?x1x?x?xbf16>
  %m3 = tensor.collapse_shape %m [[0, 1], [2], [3]] : tensor<?x1x?x?xbf16> into tensor<?x?x?xbf16>
  %mb = linalg.broadcast ins(%m3 : tensor<?x?x?xbf16>) outs(%e4 : tensor<?x4x?x?xbf16>) dimensions = [1]
  %sm = arith.addf %t3, %mb : tensor<?x4x?x?xbf16>
  %sx = arith.extf %sm : tensor<?x4x?x?xbf16> to tensor<?x4x?x?xf32>
  %f4 = tensor.empty(%B, %S, %S) : tensor<?x4x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%sx : tensor<?x4x?x?xf32>) outs(%f4 : tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
  %pt = arith.truncf %p : tensor<?x4x?x?xf32> to tensor<?x4x?x?xbf16>
  %p3 = tensor.collapse_shape %pt [[0, 1], [2], [3]] : tensor<?x4x?x?xbf16> into tensor<?x?x?xbf16>
  %v3 = tensor.collapse_shape %vr [[0, 1], [2], [3]] : tensor<?x4x?x16xbf16> into tensor<?x?x16xbf16>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x16xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xbf16>, tensor<?x?x16xbf16>) outs(%o1 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %o3 = arith.truncf %o2 : tensor<?x?x16xf32> to tensor<?x?x16xbf16>
  %o = tensor.expand_shape %o3 [[0, 1], [2], [3]] output_shape [%B, 4, %S, 16] : tensor<?x?x16xbf16> into tensor<?x4x?x16xbf16>
  return %o : tensor<?x4x?x16xbf16>
}

// -----

// Static shapes, MQA (one kv head repeated four times), a select mask of i1 and the
// reshapes as canonicalize leaves them: the repeat and the batch·heads collapse of v in one
// collapse_shape, kᵀ transposed after its collapse, the expand after the result's truncf.
// CHECK-LABEL: func.func @mqa_select_mask_static
// CHECK-SAME: (%[[Q:.*]]: tensor<2x4x8x16xf32>, %[[K:.*]]: tensor<2x1x8x16xf32>, %[[V:.*]]: tensor<2x1x8x32xf32>)
// CHECK-NEXT: %[[O:.*]] = "tessera.attention.flash"(%[[Q]], %[[K]], %[[V]]) {causal = true, scale = 0.176776692 : f32, tile = array<i64: 64, 64, 16>} : (tensor<2x4x8x16xf32>, tensor<2x1x8x16xf32>, tensor<2x1x8x32xf32>) -> tensor<2x4x8x32xf32>
// CHECK-NEXT: return %[[O]]
func.func @mqa_select_mask_static(%q: tensor<2x4x8x16xf32>, %k: tensor<2x1x8x16xf32>, %v: tensor<2x1x8x32xf32>) -> tensor<2x4x8x32xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %lowest = arith.constant dense<-3.40282347E+38> : tensor<2x4x8x8xf32>
  %scale = arith.constant dense<0.176776692> : tensor<2x4x8x8xf32>
  %kb0 = tensor.empty() : tensor<2x1x4x8x16xf32>
  %kb = linalg.broadcast ins(%k : tensor<2x1x8x16xf32>) outs(%kb0 : tensor<2x1x4x8x16xf32>) dimensions = [2]
  %k3 = tensor.collapse_shape %kb [[0, 1, 2], [3], [4]] : tensor<2x1x4x8x16xf32> into tensor<8x8x16xf32>
  %kt0 = tensor.empty() : tensor<8x16x8xf32>
  %kt3 = linalg.transpose ins(%k3 : tensor<8x8x16xf32>) outs(%kt0 : tensor<8x16x8xf32>) permutation = [0, 2, 1]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<2x4x8x16xf32> into tensor<8x8x16xf32>
  %s0 = tensor.empty() : tensor<8x8x8xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<8x8x8xf32>) -> tensor<8x8x8xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<8x8x16xf32>, tensor<8x16x8xf32>) outs(%s1 : tensor<8x8x8xf32>) -> tensor<8x8x8xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [2, 4, 8, 8] : tensor<8x8x8xf32> into tensor<2x4x8x8xf32>
  %ss = arith.mulf %scale, %s : tensor<2x4x8x8xf32>
  %m0 = tensor.empty() : tensor<8x8xi1>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} outs(%m0 : tensor<8x8xi1>) {
  ^bb0(%out: i1):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %ok = arith.cmpi sge, %i, %j : index
    linalg.yield %ok : i1
  } -> tensor<8x8xi1>
  %mb0 = tensor.empty() : tensor<2x4x8x8xi1>
  %mb = linalg.broadcast ins(%m : tensor<8x8xi1>) outs(%mb0 : tensor<2x4x8x8xi1>) dimensions = [0, 1]
  %sm = arith.select %mb, %ss, %lowest : tensor<2x4x8x8xi1>, tensor<2x4x8x8xf32>
  %e4 = tensor.empty() : tensor<2x4x8x8xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<2x4x8x8xf32>) outs(%e4 : tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<2x4x8x8xf32> into tensor<8x8x8xf32>
  %vb0 = tensor.empty() : tensor<2x1x4x8x32xf32>
  %vb = linalg.broadcast ins(%v : tensor<2x1x8x32xf32>) outs(%vb0 : tensor<2x1x4x8x32xf32>) dimensions = [2]
  %v3 = tensor.collapse_shape %vb [[0, 1, 2], [3], [4]] : tensor<2x1x4x8x32xf32> into tensor<8x8x32xf32>
  %o0 = tensor.empty() : tensor<8x8x32xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<8x8x32xf32>) -> tensor<8x8x32xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<8x8x8xf32>, tensor<8x8x32xf32>) outs(%o1 : tensor<8x8x32xf32>) -> tensor<8x8x32xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [2, 4, 8, 32] : tensor<8x8x32xf32> into tensor<2x4x8x32xf32>
  return %o : tensor<2x4x8x32xf32>
}

// -----

// A static dense additive mask (causal window of 4 over 6 tokens, blocked with -inf), the
// scale as a division by 4 and kᵀ through the matmul's indexing maps.
// CHECK-LABEL: func.func @dense_window_mask_static
// CHECK-SAME: (%[[Q:.*]]: tensor<1x2x6x8xf32>, %[[K:.*]]: tensor<1x2x6x8xf32>, %[[V:.*]]: tensor<1x2x6x8xf32>)
// CHECK-NEXT: %[[O:.*]] = "tessera.attention.flash"(%[[Q]], %[[K]], %[[V]]) {causal = true, scale = 2.500000e-01 : f32, tile = array<i64: 64, 64, 16>, window = 4 : i64}
// CHECK-NEXT: return %[[O]]
func.func @dense_window_mask_static(%q: tensor<1x2x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>) -> tensor<1x2x6x8xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %four = arith.constant dense<4.000000e+00> : tensor<1x2x6x6xf32>
  %mask = arith.constant dense<[
    [0.0, 0xFF800000, 0xFF800000, 0xFF800000, 0xFF800000, 0xFF800000],
    [0.0, 0.0, 0xFF800000, 0xFF800000, 0xFF800000, 0xFF800000],
    [0.0, 0.0, 0.0, 0xFF800000, 0xFF800000, 0xFF800000],
    [0.0, 0.0, 0.0, 0.0, 0xFF800000, 0xFF800000],
    [0xFF800000, 0.0, 0.0, 0.0, 0.0, 0xFF800000],
    [0xFF800000, 0xFF800000, 0.0, 0.0, 0.0, 0.0]]> : tensor<6x6xf32>
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %k3 = tensor.collapse_shape %k [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %s0 = tensor.empty() : tensor<2x6x6xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s2 = linalg.batch_matmul indexing_maps = [affine_map<(b, m, n, k) -> (b, m, k)>, affine_map<(b, m, n, k) -> (b, n, k)>, affine_map<(b, m, n, k) -> (b, m, n)>] ins(%q3, %k3 : tensor<2x6x8xf32>, tensor<2x6x8xf32>) outs(%s1 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 6] : tensor<2x6x6xf32> into tensor<1x2x6x6xf32>
  %ss = arith.divf %s, %four : tensor<1x2x6x6xf32>
  %mb0 = tensor.empty() : tensor<1x2x6x6xf32>
  %mb = linalg.broadcast ins(%mask : tensor<6x6xf32>) outs(%mb0 : tensor<1x2x6x6xf32>) dimensions = [0, 1]
  %sm = arith.addf %mb, %ss : tensor<1x2x6x6xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<1x2x6x6xf32>) outs(%mb0 : tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<1x2x6x6xf32> into tensor<2x6x6xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %o0 = tensor.empty() : tensor<2x6x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<2x6x6xf32>, tensor<2x6x8xf32>) outs(%o1 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 8] : tensor<2x6x8xf32> into tensor<1x2x6x8xf32>
  return %o : tensor<1x2x6x8xf32>
}

// -----

// bf16 scores scaled as torch multiplies a bf16 tensor by a Python float: through f32
// (extf, mulf, truncf), then the bf16 additive causal mask.
// CHECK-LABEL: func.func @bf16_scores_scaled_in_f32
// CHECK-SAME: (%[[Q:.*]]: tensor<?x2x?x32xbf16>, %[[K:.*]]: tensor<?x2x?x32xbf16>, %[[V:.*]]: tensor<?x2x?x32xbf16>)
// CHECK-NEXT: %[[O:.*]] = "tessera.attention.flash"(%[[Q]], %[[K]], %[[V]]) {causal = true, scale = 0.176776692 : f32, tile = array<i64: 64, 64, 16>} : (tensor<?x2x?x32xbf16>, tensor<?x2x?x32xbf16>, tensor<?x2x?x32xbf16>) -> tensor<?x2x?x32xbf16>
// CHECK-NEXT: return %[[O]]
func.func @bf16_scores_scaled_in_f32(%q: tensor<?x2x?x32xbf16>, %k: tensor<?x2x?x32xbf16>, %v: tensor<?x2x?x32xbf16>) -> tensor<?x2x?x32xbf16> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.000000e+00 : f32
  %cscale = arith.constant 0.176776692 : f32
  %B = tensor.dim %q, %c0 : tensor<?x2x?x32xbf16>
  %S = tensor.dim %q, %c2 : tensor<?x2x?x32xbf16>
  %BH = arith.muli %B, %c2 : index
  %kt0 = tensor.empty(%B, %S) : tensor<?x2x32x?xbf16>
  %kt = linalg.transpose ins(%k : tensor<?x2x?x32xbf16>) outs(%kt0 : tensor<?x2x32x?xbf16>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x2x?x32xbf16> into tensor<?x?x32xbf16>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x2x32x?xbf16> into tensor<?x32x?xbf16>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x32xbf16>, tensor<?x32x?xbf16>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, %S] : tensor<?x?x?xf32> into tensor<?x2x?x?xf32>
  %sb = arith.truncf %s : tensor<?x2x?x?xf32> to tensor<?x2x?x?xbf16>
  %sf = arith.extf %sb : tensor<?x2x?x?xbf16> to tensor<?x2x?x?xf32>
  %f4 = tensor.empty(%B, %S, %S) : tensor<?x2x?x?xf32>
  %scale = linalg.fill ins(%cscale : f32) outs(%f4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %ss = arith.mulf %sf, %scale : tensor<?x2x?x?xf32>
  %st = arith.truncf %ss : tensor<?x2x?x?xf32> to tensor<?x2x?x?xbf16>
  %m0 = tensor.empty(%B, %S, %S) : tensor<?x1x?x?xbf16>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} outs(%m0 : tensor<?x1x?x?xbf16>) {
  ^bb0(%out: bf16):
    %i = linalg.index 2 : index
    %j = linalg.index 3 : index
    %ok = arith.cmpi sle, %j, %i : index
    %allow = arith.constant 0.000000e+00 : bf16
    %block = arith.constant -3.38953139E+38 : bf16
    %r = arith.select %ok, %allow, %block : bf16
    linalg.yield %r : bf16
  } -> tensor<?x1x?x?xbf16>
  %m3 = tensor.collapse_shape %m [[0, 1], [2], [3]] : tensor<?x1x?x?xbf16> into tensor<?x?x?xbf16>
  %e4 = tensor.empty(%B, %S, %S) : tensor<?x2x?x?xbf16>
  %mb = linalg.broadcast ins(%m3 : tensor<?x?x?xbf16>) outs(%e4 : tensor<?x2x?x?xbf16>) dimensions = [1]
  %sm = arith.addf %st, %mb : tensor<?x2x?x?xbf16>
  %sx = arith.extf %sm : tensor<?x2x?x?xbf16> to tensor<?x2x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%sx : tensor<?x2x?x?xf32>) outs(%f4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %pt = arith.truncf %p : tensor<?x2x?x?xf32> to tensor<?x2x?x?xbf16>
  %p3 = tensor.collapse_shape %pt [[0, 1], [2], [3]] : tensor<?x2x?x?xbf16> into tensor<?x?x?xbf16>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<?x2x?x32xbf16> into tensor<?x?x32xbf16>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x32xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x32xf32>) -> tensor<?x?x32xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xbf16>, tensor<?x?x32xbf16>) outs(%o1 : tensor<?x?x32xf32>) -> tensor<?x?x32xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, 32] : tensor<?x?x32xf32> into tensor<?x2x?x32xf32>
  %ot = arith.truncf %o : tensor<?x2x?x32xf32> to tensor<?x2x?x32xbf16>
  return %ot : tensor<?x2x?x32xbf16>
}

// -----

// scaled_dot_product_attention as the front end writes it for bf16 MQA: the scores stay in
// the f32 accumulator (no truncf) for the scale, the select and the softmax; the one kv head
// is repeated with the unit head dim grouped with the batch ([[0, 1], [2], [3], [4]]).
// CHECK-LABEL: func.func @sdpa_bf16_mqa_scores_in_f32
// CHECK-SAME: (%[[Q:.*]]: tensor<?x4x?x16xbf16>, %[[K:.*]]: tensor<?x1x?x16xbf16>, %[[V:.*]]: tensor<?x1x?x16xbf16>)
// CHECK-NEXT: %[[O:.*]] = "tessera.attention.flash"(%[[Q]], %[[K]], %[[V]]) {causal = true, scale = 2.500000e-01 : f32, tile = array<i64: 64, 64, 16>} : (tensor<?x4x?x16xbf16>, tensor<?x1x?x16xbf16>, tensor<?x1x?x16xbf16>) -> tensor<?x4x?x16xbf16>
// CHECK-NEXT: return %[[O]]
func.func @sdpa_bf16_mqa_scores_in_f32(%q: tensor<?x4x?x16xbf16>, %k: tensor<?x1x?x16xbf16>, %v: tensor<?x1x?x16xbf16>) -> tensor<?x4x?x16xbf16> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.000000e+00 : f32
  %quarter = arith.constant 2.500000e-01 : f32
  %lowest = arith.constant -3.40282347E+38 : f32
  %B = tensor.dim %q, %c0 : tensor<?x4x?x16xbf16>
  %S = tensor.dim %q, %c2 : tensor<?x4x?x16xbf16>
  %BH = arith.muli %B, %c4 : index
  %m0 = tensor.empty(%B, %S, %S) : tensor<?x1x?x?xi1>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} outs(%m0 : tensor<?x1x?x?xi1>) {
  ^bb0(%out: i1):
    %i = linalg.index 2 : index
    %j = linalg.index 3 : index
    %ok = arith.cmpi ule, %j, %i : index
    linalg.yield %ok : i1
  } -> tensor<?x1x?x?xi1>
  %r0 = tensor.empty(%B, %S) : tensor<?x1x4x?x16xbf16>
  %kb = linalg.broadcast ins(%k : tensor<?x1x?x16xbf16>) outs(%r0 : tensor<?x1x4x?x16xbf16>) dimensions = [2]
  %vb = linalg.broadcast ins(%v : tensor<?x1x?x16xbf16>) outs(%r0 : tensor<?x1x4x?x16xbf16>) dimensions = [2]
  %kr = tensor.collapse_shape %kb [[0, 1], [2], [3], [4]] : tensor<?x1x4x?x16xbf16> into tensor<?x4x?x16xbf16>
  %kt0 = tensor.empty(%B, %S) : tensor<?x4x16x?xbf16>
  %kt = linalg.transpose ins(%kr : tensor<?x4x?x16xbf16>) outs(%kt0 : tensor<?x4x16x?xbf16>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x4x?x16xbf16> into tensor<?x?x16xbf16>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x4x16x?xbf16> into tensor<?x16x?xbf16>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x16xbf16>, tensor<?x16x?xbf16>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 4, %S, %S] : tensor<?x?x?xf32> into tensor<?x4x?x?xf32>
  %f4 = tensor.empty(%B, %S, %S) : tensor<?x4x?x?xf32>
  %scale = linalg.fill ins(%quarter : f32) outs(%f4 : tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
  %ss = arith.mulf %s, %scale : tensor<?x4x?x?xf32>
  %m3 = tensor.collapse_shape %m [[0, 1], [2], [3]] : tensor<?x1x?x?xi1> into tensor<?x?x?xi1>
  %mb0 = tensor.empty(%B, %S, %S) : tensor<?x4x?x?xi1>
  %mb = linalg.broadcast ins(%m3 : tensor<?x?x?xi1>) outs(%mb0 : tensor<?x4x?x?xi1>) dimensions = [1]
  %low = linalg.fill ins(%lowest : f32) outs(%f4 : tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
  %sm = arith.select %mb, %ss, %low : tensor<?x4x?x?xi1>, tensor<?x4x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<?x4x?x?xf32>) outs(%f4 : tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
  %pt = arith.truncf %p : tensor<?x4x?x?xf32> to tensor<?x4x?x?xbf16>
  %p3 = tensor.collapse_shape %pt [[0, 1], [2], [3]] : tensor<?x4x?x?xbf16> into tensor<?x?x?xbf16>
  %v3 = tensor.collapse_shape %vb [[0, 1, 2], [3], [4]] : tensor<?x1x4x?x16xbf16> into tensor<?x?x16xbf16>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x16xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xbf16>, tensor<?x?x16xbf16>) outs(%o1 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 4, %S, 16] : tensor<?x?x16xf32> into tensor<?x4x?x16xf32>
  %ot = arith.truncf %o : tensor<?x4x?x16xf32> to tensor<?x4x?x16xbf16>
  return %ot : tensor<?x4x?x16xbf16>
}

// -----

// No mask at all: not causal. Two chains (the second with k as its queries) share k, v,
// their views and the accumulators, as CSE leaves them; each fuses with its own scale.
// CHECK-LABEL: func.func @no_mask_two_chains
// CHECK-SAME: (%[[Q:.*]]: tensor<?x2x?x8xf32>, %[[K:.*]]: tensor<?x2x?x8xf32>, %[[V:.*]]: tensor<?x2x?x8xf32>)
// CHECK-NEXT: %[[A:.*]] = "tessera.attention.flash"(%[[Q]], %[[K]], %[[V]]) {causal = false, scale = 5.000000e-01 : f32, tile = array<i64: 64, 64, 16>}
// CHECK-NEXT: %[[B:.*]] = "tessera.attention.flash"(%[[K]], %[[K]], %[[V]]) {causal = false, scale = 1.250000e-01 : f32, tile = array<i64: 64, 64, 16>}
// CHECK-NEXT: %[[S:.*]] = arith.addf %[[A]], %[[B]]
// CHECK-NEXT: return %[[S]]
func.func @no_mask_two_chains(%q: tensor<?x2x?x8xf32>, %k: tensor<?x2x?x8xf32>, %v: tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.000000e+00 : f32
  %half = arith.constant 5.000000e-01 : f32
  %eighth = arith.constant 1.250000e-01 : f32
  %B = tensor.dim %q, %c0 : tensor<?x2x?x8xf32>
  %S = tensor.dim %q, %c2 : tensor<?x2x?x8xf32>
  %BH = arith.muli %B, %c2 : index
  %kt0 = tensor.empty(%B, %S) : tensor<?x2x8x?xf32>
  %kt = linalg.transpose ins(%k : tensor<?x2x?x8xf32>) outs(%kt0 : tensor<?x2x8x?xf32>) permutation = [0, 1, 3, 2]
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x2x8x?xf32> into tensor<?x8x?xf32>
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %e4 = tensor.empty(%B, %S, %S) : tensor<?x2x?x?xf32>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>

  %scale = linalg.fill ins(%half : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x8xf32>, tensor<?x8x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, %S] : tensor<?x?x?xf32> into tensor<?x2x?x?xf32>
  %ss = arith.mulf %s, %scale : tensor<?x2x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%ss : tensor<?x2x?x?xf32>) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<?x2x?x?xf32> into tensor<?x?x?xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xf32>, tensor<?x?x8xf32>) outs(%o1 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, 8] : tensor<?x?x8xf32> into tensor<?x2x?x8xf32>

  %scale2 = linalg.fill ins(%eighth : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %k3 = tensor.collapse_shape %k [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %t2 = linalg.batch_matmul ins(%k3, %kt3 : tensor<?x?x8xf32>, tensor<?x8x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %t = tensor.expand_shape %t2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, %S] : tensor<?x?x?xf32> into tensor<?x2x?x?xf32>
  %ts = arith.mulf %scale2, %t : tensor<?x2x?x?xf32>
  %r = linalg.softmax dimension(3) ins(%ts : tensor<?x2x?x?xf32>) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %r3 = tensor.collapse_shape %r [[0, 1], [2], [3]] : tensor<?x2x?x?xf32> into tensor<?x?x?xf32>
  %u2 = linalg.batch_matmul ins(%r3, %v3 : tensor<?x?x?xf32>, tensor<?x?x8xf32>) outs(%o1 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %u = tensor.expand_shape %u2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, 8] : tensor<?x?x8xf32> into tensor<?x2x?x8xf32>
  %sum = arith.addf %o, %u : tensor<?x2x?x8xf32>
  return %sum : tensor<?x2x?x8xf32>
}

// -----

// CHECK-LABEL: func.func @no_fusion_when_softmax_is_over_the_query_axis
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(2)
func.func @no_fusion_when_softmax_is_over_the_query_axis(%q: tensor<1x2x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>) -> tensor<1x2x6x8xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %scale = arith.constant dense<2.500000e-01> : tensor<1x2x6x6xf32>
  %kt0 = tensor.empty() : tensor<1x2x8x6xf32>
  %kt = linalg.transpose ins(%k : tensor<1x2x6x8xf32>) outs(%kt0 : tensor<1x2x8x6xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<1x2x8x6xf32> into tensor<2x8x6xf32>
  %s0 = tensor.empty() : tensor<2x6x6xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<2x6x8xf32>, tensor<2x8x6xf32>) outs(%s1 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 6] : tensor<2x6x6xf32> into tensor<1x2x6x6xf32>
  %ss = arith.mulf %s, %scale : tensor<1x2x6x6xf32>
  %e4 = tensor.empty() : tensor<1x2x6x6xf32>
  %p = linalg.softmax dimension(2) ins(%ss : tensor<1x2x6x6xf32>) outs(%e4 : tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<1x2x6x6xf32> into tensor<2x6x6xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %o0 = tensor.empty() : tensor<2x6x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<2x6x6xf32>, tensor<2x6x8xf32>) outs(%o1 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 8] : tensor<2x6x8xf32> into tensor<1x2x6x8xf32>
  return %o : tensor<1x2x6x8xf32>
}

// -----

// The scaled scores are also returned: fusing would lose them.
// CHECK-LABEL: func.func @no_fusion_when_scaled_scores_have_a_second_user
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_scaled_scores_have_a_second_user(%q: tensor<1x2x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>) -> (tensor<1x2x6x8xf32>, tensor<1x2x6x6xf32>) {
  %zero = arith.constant 0.000000e+00 : f32
  %scale = arith.constant dense<2.500000e-01> : tensor<1x2x6x6xf32>
  %kt0 = tensor.empty() : tensor<1x2x8x6xf32>
  %kt = linalg.transpose ins(%k : tensor<1x2x6x8xf32>) outs(%kt0 : tensor<1x2x8x6xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<1x2x8x6xf32> into tensor<2x8x6xf32>
  %s0 = tensor.empty() : tensor<2x6x6xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<2x6x8xf32>, tensor<2x8x6xf32>) outs(%s1 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 6] : tensor<2x6x6xf32> into tensor<1x2x6x6xf32>
  %ss = arith.mulf %s, %scale : tensor<1x2x6x6xf32>
  %e4 = tensor.empty() : tensor<1x2x6x6xf32>
  %p = linalg.softmax dimension(3) ins(%ss : tensor<1x2x6x6xf32>) outs(%e4 : tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<1x2x6x6xf32> into tensor<2x6x6xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %o0 = tensor.empty() : tensor<2x6x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<2x6x6xf32>, tensor<2x6x8xf32>) outs(%o1 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 8] : tensor<2x6x8xf32> into tensor<1x2x6x8xf32>
  return %o, %ss : tensor<1x2x6x8xf32>, tensor<1x2x6x6xf32>
}

// -----

// A mask passed in cannot be proven causal.
// CHECK-LABEL: func.func @no_fusion_when_the_mask_is_an_argument
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_the_mask_is_an_argument(%q: tensor<1x2x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>, %mask: tensor<1x2x6x6xf32>) -> tensor<1x2x6x8xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %scale = arith.constant dense<2.500000e-01> : tensor<1x2x6x6xf32>
  %kt0 = tensor.empty() : tensor<1x2x8x6xf32>
  %kt = linalg.transpose ins(%k : tensor<1x2x6x8xf32>) outs(%kt0 : tensor<1x2x8x6xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<1x2x8x6xf32> into tensor<2x8x6xf32>
  %s0 = tensor.empty() : tensor<2x6x6xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<2x6x8xf32>, tensor<2x8x6xf32>) outs(%s1 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 6] : tensor<2x6x6xf32> into tensor<1x2x6x6xf32>
  %ss = arith.mulf %s, %scale : tensor<1x2x6x6xf32>
  %sm = arith.addf %ss, %mask : tensor<1x2x6x6xf32>
  %e4 = tensor.empty() : tensor<1x2x6x6xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<1x2x6x6xf32>) outs(%e4 : tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<1x2x6x6xf32> into tensor<2x6x6xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %o0 = tensor.empty() : tensor<2x6x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<2x6x6xf32>, tensor<2x6x8xf32>) outs(%o1 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 8] : tensor<2x6x8xf32> into tensor<1x2x6x8xf32>
  return %o : tensor<1x2x6x8xf32>
}

// -----

// A mask that lets every query also see the first key (an attention sink) is not a causal
// window: "key ≤ query" holds, "query − key < 4" does not, except at key 0.
// CHECK-LABEL: func.func @no_fusion_when_the_mask_is_not_a_causal_window
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_the_mask_is_not_a_causal_window(%q: tensor<?x2x?x8xf32>, %k: tensor<?x2x?x8xf32>, %v: tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.000000e+00 : f32
  %half = arith.constant 5.000000e-01 : f32
  %B = tensor.dim %q, %c0 : tensor<?x2x?x8xf32>
  %S = tensor.dim %q, %c2 : tensor<?x2x?x8xf32>
  %BH = arith.muli %B, %c2 : index
  %kt0 = tensor.empty(%B, %S) : tensor<?x2x8x?xf32>
  %kt = linalg.transpose ins(%k : tensor<?x2x?x8xf32>) outs(%kt0 : tensor<?x2x8x?xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x2x8x?xf32> into tensor<?x8x?xf32>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x8xf32>, tensor<?x8x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, %S] : tensor<?x?x?xf32> into tensor<?x2x?x?xf32>
  %e4 = tensor.empty(%B, %S, %S) : tensor<?x2x?x?xf32>
  %scale = linalg.fill ins(%half : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %ss = arith.mulf %s, %scale : tensor<?x2x?x?xf32>
  %m0 = tensor.empty(%S, %S) : tensor<?x?xf32>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} outs(%m0 : tensor<?x?xf32>) {
  ^bb0(%out: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %past = arith.cmpi sle, %j, %i : index
    %d = arith.subi %i, %j : index
    %near = arith.cmpi slt, %d, %c4 : index
    %sink = arith.cmpi eq, %j, %c0 : index
    %seen = arith.ori %near, %sink : i1
    %ok = arith.andi %past, %seen : i1
    %allow = arith.constant 0.000000e+00 : f32
    %block = arith.constant -3.40282347E+38 : f32
    %r = arith.select %ok, %allow, %block : f32
    linalg.yield %r : f32
  } -> tensor<?x?xf32>
  %mb = linalg.broadcast ins(%m : tensor<?x?xf32>) outs(%e4 : tensor<?x2x?x?xf32>) dimensions = [0, 1]
  %sm = arith.addf %ss, %mb : tensor<?x2x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<?x2x?x?xf32>) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<?x2x?x?xf32> into tensor<?x?x?xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xf32>, tensor<?x?x8xf32>) outs(%o1 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, 8] : tensor<?x?x8xf32> into tensor<?x2x?x8xf32>
  return %o : tensor<?x2x?x8xf32>
}

// -----

// A window that differs between batch rows is not one attribute.
// CHECK-LABEL: func.func @no_fusion_when_the_mask_depends_on_the_batch_row
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_the_mask_depends_on_the_batch_row(%q: tensor<?x2x?x8xf32>, %k: tensor<?x2x?x8xf32>, %v: tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.000000e+00 : f32
  %half = arith.constant 5.000000e-01 : f32
  %B = tensor.dim %q, %c0 : tensor<?x2x?x8xf32>
  %S = tensor.dim %q, %c2 : tensor<?x2x?x8xf32>
  %BH = arith.muli %B, %c2 : index
  %kt0 = tensor.empty(%B, %S) : tensor<?x2x8x?xf32>
  %kt = linalg.transpose ins(%k : tensor<?x2x?x8xf32>) outs(%kt0 : tensor<?x2x8x?xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x2x8x?xf32> into tensor<?x8x?xf32>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x8xf32>, tensor<?x8x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, %S] : tensor<?x?x?xf32> into tensor<?x2x?x?xf32>
  %e4 = tensor.empty(%B, %S, %S) : tensor<?x2x?x?xf32>
  %scale = linalg.fill ins(%half : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %ss = arith.mulf %s, %scale : tensor<?x2x?x?xf32>
  %m0 = tensor.empty(%B, %S, %S) : tensor<?x?x?xi1>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} outs(%m0 : tensor<?x?x?xi1>) {
  ^bb0(%out: i1):
    %b = linalg.index 0 : index
    %i = linalg.index 1 : index
    %j = linalg.index 2 : index
    %past = arith.cmpi sle, %j, %i : index
    %d = arith.subi %i, %j : index
    %w = arith.addi %b, %c4 : index
    %near = arith.cmpi slt, %d, %w : index
    %ok = arith.andi %past, %near : i1
    linalg.yield %ok : i1
  } -> tensor<?x?x?xi1>
  %mb0 = tensor.empty(%B, %S, %S) : tensor<?x2x?x?xi1>
  %mb = linalg.broadcast ins(%m : tensor<?x?x?xi1>) outs(%mb0 : tensor<?x2x?x?xi1>) dimensions = [1]
  %lowest = arith.constant -3.40282347E+38 : f32
  %low = linalg.fill ins(%lowest : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %sm = arith.select %mb, %ss, %low : tensor<?x2x?x?xi1>, tensor<?x2x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<?x2x?x?xf32>) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<?x2x?x?xf32> into tensor<?x?x?xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xf32>, tensor<?x?x8xf32>) outs(%o1 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, 8] : tensor<?x?x8xf32> into tensor<?x2x?x8xf32>
  return %o : tensor<?x2x?x8xf32>
}

// -----

// A per-element scale is not an attribute.
// CHECK-LABEL: func.func @no_fusion_when_the_scale_is_not_a_splat
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_the_scale_is_not_a_splat(%q: tensor<1x2x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>, %scale: tensor<1x2x6x6xf32>) -> tensor<1x2x6x8xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %kt0 = tensor.empty() : tensor<1x2x8x6xf32>
  %kt = linalg.transpose ins(%k : tensor<1x2x6x8xf32>) outs(%kt0 : tensor<1x2x8x6xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<1x2x8x6xf32> into tensor<2x8x6xf32>
  %s0 = tensor.empty() : tensor<2x6x6xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<2x6x8xf32>, tensor<2x8x6xf32>) outs(%s1 : tensor<2x6x6xf32>) -> tensor<2x6x6xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 6] : tensor<2x6x6xf32> into tensor<1x2x6x6xf32>
  %ss = arith.mulf %s, %scale : tensor<1x2x6x6xf32>
  %e4 = tensor.empty() : tensor<1x2x6x6xf32>
  %p = linalg.softmax dimension(3) ins(%ss : tensor<1x2x6x6xf32>) outs(%e4 : tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<1x2x6x6xf32> into tensor<2x6x6xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<1x2x6x8xf32> into tensor<2x6x8xf32>
  %o0 = tensor.empty() : tensor<2x6x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<2x6x6xf32>, tensor<2x6x8xf32>) outs(%o1 : tensor<2x6x8xf32>) -> tensor<2x6x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [1, 2, 6, 8] : tensor<2x6x8xf32> into tensor<1x2x6x8xf32>
  return %o : tensor<1x2x6x8xf32>
}

// -----

// q has 8 heads but k and v are repeated to 4: the collapsed batch dims are dynamic, so the
// types agree, but the head counts do not line up.
// CHECK-LABEL: func.func @no_fusion_when_the_gqa_repeat_does_not_match_the_heads
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_the_gqa_repeat_does_not_match_the_heads(%q: tensor<?x8x?x16xf32>, %k: tensor<?x2x?x16xf32>, %v: tensor<?x2x?x16xf32>, %BH: index) -> tensor<?x8x?x16xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.000000e+00 : f32
  %quarter = arith.constant 2.500000e-01 : f32
  %B = tensor.dim %q, %c0 : tensor<?x8x?x16xf32>
  %S = tensor.dim %q, %c2 : tensor<?x8x?x16xf32>
  %kb0 = tensor.empty(%B, %S) : tensor<?x2x2x?x16xf32>
  %kb = linalg.broadcast ins(%k : tensor<?x2x?x16xf32>) outs(%kb0 : tensor<?x2x2x?x16xf32>) dimensions = [2]
  %kr = tensor.collapse_shape %kb [[0], [1, 2], [3], [4]] : tensor<?x2x2x?x16xf32> into tensor<?x4x?x16xf32>
  %vb = linalg.broadcast ins(%v : tensor<?x2x?x16xf32>) outs(%kb0 : tensor<?x2x2x?x16xf32>) dimensions = [2]
  %v3 = tensor.collapse_shape %vb [[0, 1, 2], [3], [4]] : tensor<?x2x2x?x16xf32> into tensor<?x?x16xf32>
  %kt0 = tensor.empty(%B, %S) : tensor<?x4x16x?xf32>
  %kt = linalg.transpose ins(%kr : tensor<?x4x?x16xf32>) outs(%kt0 : tensor<?x4x16x?xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x8x?x16xf32> into tensor<?x?x16xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x4x16x?xf32> into tensor<?x16x?xf32>
  %s0 = tensor.empty(%BH, %S, %S) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x16xf32>, tensor<?x16x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 8, %S, %S] : tensor<?x?x?xf32> into tensor<?x8x?x?xf32>
  %e4 = tensor.empty(%B, %S, %S) : tensor<?x8x?x?xf32>
  %scale = linalg.fill ins(%quarter : f32) outs(%e4 : tensor<?x8x?x?xf32>) -> tensor<?x8x?x?xf32>
  %ss = arith.mulf %s, %scale : tensor<?x8x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%ss : tensor<?x8x?x?xf32>) outs(%e4 : tensor<?x8x?x?xf32>) -> tensor<?x8x?x?xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<?x8x?x?xf32> into tensor<?x?x?xf32>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x16xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xf32>, tensor<?x?x16xf32>) outs(%o1 : tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 8, %S, 16] : tensor<?x?x16xf32> into tensor<?x8x?x16xf32>
  return %o : tensor<?x8x?x16xf32>
}

// -----

// Repeating along a new axis before the kv heads interleaves them (query head h reads kv
// head h mod 2, not h / 2): not the GQA the flash op implements.
// CHECK-LABEL: func.func @no_fusion_when_the_repeat_interleaves_kv_heads
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_the_repeat_interleaves_kv_heads(%q: tensor<1x4x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>) -> tensor<1x4x6x8xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %scale = arith.constant dense<2.500000e-01> : tensor<1x4x6x6xf32>
  %b0 = tensor.empty() : tensor<1x2x2x6x8xf32>
  %kb = linalg.broadcast ins(%k : tensor<1x2x6x8xf32>) outs(%b0 : tensor<1x2x2x6x8xf32>) dimensions = [1]
  %kr = tensor.collapse_shape %kb [[0], [1, 2], [3], [4]] : tensor<1x2x2x6x8xf32> into tensor<1x4x6x8xf32>
  %vb = linalg.broadcast ins(%v : tensor<1x2x6x8xf32>) outs(%b0 : tensor<1x2x2x6x8xf32>) dimensions = [1]
  %vr = tensor.collapse_shape %vb [[0], [1, 2], [3], [4]] : tensor<1x2x2x6x8xf32> into tensor<1x4x6x8xf32>
  %kt0 = tensor.empty() : tensor<1x4x8x6xf32>
  %kt = linalg.transpose ins(%kr : tensor<1x4x6x8xf32>) outs(%kt0 : tensor<1x4x8x6xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<1x4x6x8xf32> into tensor<4x6x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<1x4x8x6xf32> into tensor<4x8x6xf32>
  %s0 = tensor.empty() : tensor<4x6x6xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<4x6x6xf32>) -> tensor<4x6x6xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<4x6x8xf32>, tensor<4x8x6xf32>) outs(%s1 : tensor<4x6x6xf32>) -> tensor<4x6x6xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [1, 4, 6, 6] : tensor<4x6x6xf32> into tensor<1x4x6x6xf32>
  %ss = arith.mulf %s, %scale : tensor<1x4x6x6xf32>
  %e4 = tensor.empty() : tensor<1x4x6x6xf32>
  %p = linalg.softmax dimension(3) ins(%ss : tensor<1x4x6x6xf32>) outs(%e4 : tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<1x4x6x6xf32> into tensor<4x6x6xf32>
  %v3 = tensor.collapse_shape %vr [[0, 1], [2], [3]] : tensor<1x4x6x8xf32> into tensor<4x6x8xf32>
  %o0 = tensor.empty() : tensor<4x6x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<4x6x8xf32>) -> tensor<4x6x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<4x6x6xf32>, tensor<4x6x8xf32>) outs(%o1 : tensor<4x6x8xf32>) -> tensor<4x6x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [1, 4, 6, 8] : tensor<4x6x8xf32> into tensor<1x4x6x8xf32>
  return %o : tensor<1x4x6x8xf32>
}

// -----

// Keys counted apart from queries (k's own length): a causal mask read as key ≤ query is
// flash attention's causality only when there are as many keys as queries, which nothing
// here shows.
// CHECK-LABEL: func.func @no_fusion_when_keys_may_outnumber_queries
// CHECK-NOT: tessera.attention.flash
// CHECK: linalg.softmax dimension(3)
func.func @no_fusion_when_keys_may_outnumber_queries(%q: tensor<?x2x?x8xf32>, %k: tensor<?x2x?x8xf32>, %v: tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.000000e+00 : f32
  %half = arith.constant 5.000000e-01 : f32
  %B = tensor.dim %q, %c0 : tensor<?x2x?x8xf32>
  %S = tensor.dim %q, %c2 : tensor<?x2x?x8xf32>
  %T = tensor.dim %k, %c2 : tensor<?x2x?x8xf32>
  %BH = arith.muli %B, %c2 : index
  %kt0 = tensor.empty(%B, %T) : tensor<?x2x8x?xf32>
  %kt = linalg.transpose ins(%k : tensor<?x2x?x8xf32>) outs(%kt0 : tensor<?x2x8x?xf32>) permutation = [0, 1, 3, 2]
  %q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x2x8x?xf32> into tensor<?x8x?xf32>
  %s0 = tensor.empty(%BH, %S, %T) : tensor<?x?x?xf32>
  %s1 = linalg.fill ins(%zero : f32) outs(%s0 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x8xf32>, tensor<?x8x?xf32>) outs(%s1 : tensor<?x?x?xf32>) -> tensor<?x?x?xf32>
  %s = tensor.expand_shape %s2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, %T] : tensor<?x?x?xf32> into tensor<?x2x?x?xf32>
  %e4 = tensor.empty(%B, %S, %T) : tensor<?x2x?x?xf32>
  %scale = linalg.fill ins(%half : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %ss = arith.mulf %s, %scale : tensor<?x2x?x?xf32>
  %m0 = tensor.empty(%S, %T) : tensor<?x?xi1>
  %m = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} outs(%m0 : tensor<?x?xi1>) {
  ^bb0(%out: i1):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %ok = arith.cmpi sle, %j, %i : index
    linalg.yield %ok : i1
  } -> tensor<?x?xi1>
  %mb0 = tensor.empty(%B, %S, %T) : tensor<?x2x?x?xi1>
  %mb = linalg.broadcast ins(%m : tensor<?x?xi1>) outs(%mb0 : tensor<?x2x?x?xi1>) dimensions = [0, 1]
  %lowest = arith.constant -3.40282347E+38 : f32
  %low = linalg.fill ins(%lowest : f32) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %sm = arith.select %mb, %ss, %low : tensor<?x2x?x?xi1>, tensor<?x2x?x?xf32>
  %p = linalg.softmax dimension(3) ins(%sm : tensor<?x2x?x?xf32>) outs(%e4 : tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %p3 = tensor.collapse_shape %p [[0, 1], [2], [3]] : tensor<?x2x?x?xf32> into tensor<?x?x?xf32>
  %v3 = tensor.collapse_shape %v [[0, 1], [2], [3]] : tensor<?x2x?x8xf32> into tensor<?x?x8xf32>
  %o0 = tensor.empty(%BH, %S) : tensor<?x?x8xf32>
  %o1 = linalg.fill ins(%zero : f32) outs(%o0 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o2 = linalg.batch_matmul ins(%p3, %v3 : tensor<?x?x?xf32>, tensor<?x?x8xf32>) outs(%o1 : tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %o = tensor.expand_shape %o2 [[0, 1], [2], [3]] output_shape [%B, 2, %S, 8] : tensor<?x?x8xf32> into tensor<?x2x?x8xf32>
  return %o : tensor<?x2x?x8xf32>
}
