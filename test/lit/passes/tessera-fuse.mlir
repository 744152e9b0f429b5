// RUN: tessera-opt %s -p 'builtin.module(tessera-fuse)' | filecheck %s

// A miniature Gemma 2 forward in bf16 as the front end writes it: scaled embedding, one
// decoder block (pre-MLP norm, GeGLU, residual add), final norm, tied LM head with the
// final-logit softcap. The front end wrote duplicate splats and collapses; canonicalize and
// cse run first and the fusions must still see whole chains.
// CHECK-LABEL: func.func @forward
// CHECK-SAME: (%[[IDS:arg[0-9]+]]: tensor<?x?xi64> {tessera.input = "input_ids"},
// CHECK-SAME: %[[EMB:arg[0-9]+]]: tensor<96x32xbf16> {tessera.weight = "model.embed_tokens.weight"},
// CHECK-SAME: %[[N1:arg[0-9]+]]: tensor<32xbf16> {tessera.weight = "model.layers.0.pre_feedforward_layernorm.weight"},
// CHECK-SAME: %[[WG:arg[0-9]+]]: tensor<64x32xbf16> {tessera.weight = "model.layers.0.mlp.gate_proj.weight"},
// CHECK-SAME: %[[WU:arg[0-9]+]]: tensor<64x32xbf16> {tessera.weight = "model.layers.0.mlp.up_proj.weight"},
// CHECK-SAME: %[[WD:arg[0-9]+]]: tensor<32x64xbf16> {tessera.weight = "model.layers.0.mlp.down_proj.weight"},
// CHECK-SAME: %[[NF:arg[0-9]+]]: tensor<32xbf16> {tessera.weight = "model.norm.weight"})
// CHECK-NEXT: %[[H0:.*]] = "tessera.tensor.lookup"(%[[EMB]], %[[IDS]]) {scale = 5.656250e+00 : f32} : (tensor<96x32xbf16>, tensor<?x?xi64>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: %[[H1:.*]] = "tessera.region"(%[[H0]]) ({
// CHECK-NEXT: ^bb0(%[[X:.*]]: tensor<?x?x32xbf16>):
// CHECK-NEXT: %[[XN:.*]] = "tessera.norm.rms"(%[[X]], %[[N1]]) {eps = 9.99999997E-7 : f32, offset = 1.000000e+00 : f32} : (tensor<?x?x32xbf16>, tensor<32xbf16>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: %[[M:.*]] = "tessera.mlp.swi_glu"(%[[XN]], %[[WG]], %[[WU]], %[[WD]]) {activation = "gelu_tanh"} : (tensor<?x?x32xbf16>, tensor<64x32xbf16>, tensor<64x32xbf16>, tensor<32x64xbf16>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: %[[R:.*]] = arith.addf %[[X]], %[[M]] : tensor<?x?x32xbf16>
// CHECK-NEXT: "tessera.yield"(%[[R]]) : (tensor<?x?x32xbf16>) -> ()
// CHECK-NEXT: }) {kind = "global", label = "model.layers.0", layer = 0 : i64} : (tensor<?x?x32xbf16>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: %[[F:.*]] = "tessera.norm.rms"(%[[H1]], %[[NF]]) {eps = 9.99999997E-7 : f32, offset = 1.000000e+00 : f32} : (tensor<?x?x32xbf16>, tensor<32xbf16>) -> tensor<?x?x32xbf16>
// CHECK-NEXT: %[[L:.*]] = "tessera.mma.proj"(%[[F]], %[[EMB]]) {softcap = 3.000000e+01 : f32, transpose_w = true} : (tensor<?x?x32xbf16>, tensor<96x32xbf16>) -> tensor<?x?x96xbf16>
// CHECK-NEXT: return %[[L]] : tensor<?x?x96xbf16>
#ids = affine_map<(d0, d1, d2) -> (d0, d1)>
#all = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#lhs = affine_map<(m, n, k) -> (m, k)>
#rhs_t = affine_map<(m, n, k) -> (n, k)>
#out = affine_map<(m, n, k) -> (m, n)>
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"},
                   %emb: tensor<96x32xbf16> {tessera.weight = "model.embed_tokens.weight"},
                   %n1: tensor<32xbf16> {tessera.weight = "model.layers.0.pre_feedforward_layernorm.weight"},
                   %wg: tensor<64x32xbf16> {tessera.weight = "model.layers.0.mlp.gate_proj.weight"},
                   %wu: tensor<64x32xbf16> {tessera.weight = "model.layers.0.mlp.up_proj.weight"},
                   %wd: tensor<32x64xbf16> {tessera.weight = "model.layers.0.mlp.down_proj.weight"},
                   %nf: tensor<32xbf16> {tessera.weight = "model.norm.weight"})
    -> tensor<?x?x96xbf16> attributes {tessera.model = "gemma2"} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  // embedding × sqrt(32) rounded to bf16
  %eg = tensor.empty(%B, %S) : tensor<?x?x32xbf16>
  %g = linalg.generic {indexing_maps = [#ids, #all], iterator_types = ["parallel", "parallel", "parallel"]} ins(%ids : tensor<?x?xi64>) outs(%eg : tensor<?x?x32xbf16>) {
  ^bb0(%id: i64, %o: bf16):
    %i = arith.index_cast %id : i64 to index
    %j = linalg.index 2 : index
    %v = tensor.extract %emb[%i, %j] : tensor<96x32xbf16>
    linalg.yield %v : bf16
  } -> tensor<?x?x32xbf16>
  %c_norm = arith.constant 5.65625 : bf16
  %normaliser = linalg.fill ins(%c_norm : bf16) outs(%eg : tensor<?x?x32xbf16>) -> tensor<?x?x32xbf16>
  %h0 = arith.mulf %g, %normaliser : tensor<?x?x32xbf16>

  %h1 = "tessera.region"(%h0) ({
  ^bb0(%x: tensor<?x?x32xbf16>):
    %rc0 = arith.constant 0 : index
    %rc1 = arith.constant 1 : index
    %rB = tensor.dim %x, %rc0 : tensor<?x?x32xbf16>
    %rS = tensor.dim %x, %rc1 : tensor<?x?x32xbf16>
    %rM = arith.muli %rB, %rS : index
    // pre-MLP RMSNorm (1 + w) in f32
    %xf = arith.extf %x : tensor<?x?x32xbf16> to tensor<?x?x32xf32>
    %full = tensor.empty(%rB, %rS) : tensor<?x?x32xf32>
    %c2 = arith.constant 2.0 : f32
    %two = linalg.fill ins(%c2 : f32) outs(%full : tensor<?x?x32xf32>) -> tensor<?x?x32xf32>
    %sq = math.powf %xf, %two : tensor<?x?x32xf32>
    %rows = tensor.empty(%rB, %rS) : tensor<?x?xf32>
    %zero = arith.constant 0.0 : f32
    %init = linalg.fill ins(%zero : f32) outs(%rows : tensor<?x?xf32>) -> tensor<?x?xf32>
    %sum = linalg.reduce ins(%sq : tensor<?x?x32xf32>) outs(%init : tensor<?x?xf32>) dimensions = [2]
      (%a: f32, %b: f32) {
        %s = arith.addf %a, %b : f32
        linalg.yield %s : f32
      }
    %sumk = tensor.expand_shape %sum [[0], [1, 2]] output_shape [%rB, %rS, 1] : tensor<?x?xf32> into tensor<?x?x1xf32>
    %kept = tensor.empty(%rB, %rS) : tensor<?x?x1xf32>
    %c32 = arith.constant 32.0 : f32
    %width = linalg.fill ins(%c32 : f32) outs(%kept : tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
    %mean = arith.divf %sumk, %width : tensor<?x?x1xf32>
    %ceps = arith.constant 1.0e-06 : f32
    %eps = linalg.fill ins(%ceps : f32) outs(%kept : tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
    %var = arith.addf %mean, %eps : tensor<?x?x1xf32>
    %r = math.rsqrt %var : tensor<?x?x1xf32>
    %rr = tensor.collapse_shape %r [[0], [1, 2]] : tensor<?x?x1xf32> into tensor<?x?xf32>
    %rb = linalg.broadcast ins(%rr : tensor<?x?xf32>) outs(%full : tensor<?x?x32xf32>) dimensions = [2]
    %xr = arith.mulf %xf, %rb : tensor<?x?x32xf32>
    %w1f = arith.extf %n1 : tensor<32xbf16> to tensor<32xf32>
    %one = arith.constant dense<1.0> : tensor<32xf32>
    %w1 = arith.addf %one, %w1f : tensor<32xf32>
    %w1b = linalg.broadcast ins(%w1 : tensor<32xf32>) outs(%full : tensor<?x?x32xf32>) dimensions = [0, 1]
    %xnf = arith.mulf %xr, %w1b : tensor<?x?x32xf32>
    %xn = arith.truncf %xnf : tensor<?x?x32xf32> to tensor<?x?x32xbf16>
    // GeGLU: each projection collapses its input itself (cse merges the two collapses)
    %xg = tensor.collapse_shape %xn [[0, 1], [2]] : tensor<?x?x32xbf16> into tensor<?x32xbf16>
    %eh = tensor.empty(%rM) : tensor<?x64xf32>
    %zh = arith.constant 0.0 : f32
    %acch = linalg.fill ins(%zh : f32) outs(%eh : tensor<?x64xf32>) -> tensor<?x64xf32>
    %g2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%xg, %wg : tensor<?x32xbf16>, tensor<64x32xbf16>) outs(%acch : tensor<?x64xf32>) -> tensor<?x64xf32>
    %g2t = arith.truncf %g2 : tensor<?x64xf32> to tensor<?x64xbf16>
    %gate = tensor.expand_shape %g2t [[0, 1], [2]] output_shape [%rB, %rS, 64] : tensor<?x64xbf16> into tensor<?x?x64xbf16>
    %xu = tensor.collapse_shape %xn [[0, 1], [2]] : tensor<?x?x32xbf16> into tensor<?x32xbf16>
    %eu = tensor.empty(%rM) : tensor<?x64xf32>
    %accu = linalg.fill ins(%zh : f32) outs(%eu : tensor<?x64xf32>) -> tensor<?x64xf32>
    %u2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%xu, %wu : tensor<?x32xbf16>, tensor<64x32xbf16>) outs(%accu : tensor<?x64xf32>) -> tensor<?x64xf32>
    %u2t = arith.truncf %u2 : tensor<?x64xf32> to tensor<?x64xbf16>
    %up = tensor.expand_shape %u2t [[0, 1], [2]] output_shape [%rB, %rS, 64] : tensor<?x64xbf16> into tensor<?x?x64xbf16>
    %gf = arith.extf %gate : tensor<?x?x64xbf16> to tensor<?x?x64xf32>
    %hfull = tensor.empty(%rB, %rS) : tensor<?x?x64xf32>
    %c_half = arith.constant 0.5 : f32
    %half = linalg.fill ins(%c_half : f32) outs(%hfull : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %c_one = arith.constant 1.0 : f32
    %ones = linalg.fill ins(%c_one : f32) outs(%hfull : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %c_k = arith.constant 0.7978845608028654 : f32
    %k = linalg.fill ins(%c_k : f32) outs(%hfull : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %c_a = arith.constant 0.044715 : f32
    %alpha = linalg.fill ins(%c_a : f32) outs(%hfull : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %c3 = arith.constant 3.0 : f32
    %three = linalg.fill ins(%c3 : f32) outs(%hfull : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %cube = math.powf %gf, %three : tensor<?x?x64xf32>
    %t0 = arith.mulf %alpha, %cube : tensor<?x?x64xf32>
    %t1 = arith.addf %gf, %t0 : tensor<?x?x64xf32>
    %t2 = arith.mulf %k, %t1 : tensor<?x?x64xf32>
    %t3 = math.tanh %t2 : tensor<?x?x64xf32>
    %t4 = arith.addf %ones, %t3 : tensor<?x?x64xf32>
    %t5 = arith.mulf %half, %gf : tensor<?x?x64xf32>
    %actf = arith.mulf %t5, %t4 : tensor<?x?x64xf32>
    %act = arith.truncf %actf : tensor<?x?x64xf32> to tensor<?x?x64xbf16>
    %hid = arith.mulf %act, %up : tensor<?x?x64xbf16>
    %hid2 = tensor.collapse_shape %hid [[0, 1], [2]] : tensor<?x?x64xbf16> into tensor<?x64xbf16>
    %ed = tensor.empty(%rM) : tensor<?x32xf32>
    %accd = linalg.fill ins(%zh : f32) outs(%ed : tensor<?x32xf32>) -> tensor<?x32xf32>
    %d2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%hid2, %wd : tensor<?x64xbf16>, tensor<32x64xbf16>) outs(%accd : tensor<?x32xf32>) -> tensor<?x32xf32>
    %d2t = arith.truncf %d2 : tensor<?x32xf32> to tensor<?x32xbf16>
    %down = tensor.expand_shape %d2t [[0, 1], [2]] output_shape [%rB, %rS, 32] : tensor<?x32xbf16> into tensor<?x?x32xbf16>
    %res = arith.addf %x, %down : tensor<?x?x32xbf16>
    "tessera.yield"(%res) : (tensor<?x?x32xbf16>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64, kind = "global"} : (tensor<?x?x32xbf16>) -> tensor<?x?x32xbf16>

  // final norm
  %M = arith.muli %B, %S : index
  %ff = arith.extf %h1 : tensor<?x?x32xbf16> to tensor<?x?x32xf32>
  %ffull = tensor.empty(%B, %S) : tensor<?x?x32xf32>
  %fsq = arith.mulf %ff, %ff : tensor<?x?x32xf32>
  %frows = tensor.empty(%B, %S) : tensor<?x?xf32>
  %fzero = arith.constant 0.0 : f32
  %finit = linalg.fill ins(%fzero : f32) outs(%frows : tensor<?x?xf32>) -> tensor<?x?xf32>
  %fsum = linalg.reduce ins(%fsq : tensor<?x?x32xf32>) outs(%finit : tensor<?x?xf32>) dimensions = [2]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %finv = arith.constant 3.125000e-02 : f32
  %fwidth = linalg.fill ins(%finv : f32) outs(%frows : tensor<?x?xf32>) -> tensor<?x?xf32>
  %fmean = arith.mulf %fsum, %fwidth : tensor<?x?xf32>
  %fceps = arith.constant 1.0e-06 : f32
  %feps = linalg.fill ins(%fceps : f32) outs(%frows : tensor<?x?xf32>) -> tensor<?x?xf32>
  %fvar = arith.addf %fmean, %feps : tensor<?x?xf32>
  %fr = math.rsqrt %fvar : tensor<?x?xf32>
  %frb = linalg.broadcast ins(%fr : tensor<?x?xf32>) outs(%ffull : tensor<?x?x32xf32>) dimensions = [2]
  %fxr = arith.mulf %ff, %frb : tensor<?x?x32xf32>
  %fwf = arith.extf %nf : tensor<32xbf16> to tensor<32xf32>
  %fone = arith.constant dense<1.0> : tensor<32xf32>
  %fw1 = arith.addf %fwf, %fone : tensor<32xf32>
  %fw1b = linalg.broadcast ins(%fw1 : tensor<32xf32>) outs(%ffull : tensor<?x?x32xf32>) dimensions = [0, 1]
  %fnf = arith.mulf %fw1b, %fxr : tensor<?x?x32xf32>
  %fn = arith.truncf %fnf : tensor<?x?x32xf32> to tensor<?x?x32xbf16>
  // tied LM head and 30·tanh(logits / 30)
  %fx2 = tensor.collapse_shape %fn [[0, 1], [2]] : tensor<?x?x32xbf16> into tensor<?x32xbf16>
  %el = tensor.empty(%M) : tensor<?x96xf32>
  %accl = linalg.fill ins(%fzero : f32) outs(%el : tensor<?x96xf32>) -> tensor<?x96xf32>
  %l2 = linalg.matmul indexing_maps = [#lhs, #rhs_t, #out] ins(%fx2, %emb : tensor<?x32xbf16>, tensor<96x32xbf16>) outs(%accl : tensor<?x96xf32>) -> tensor<?x96xf32>
  %l2t = arith.truncf %l2 : tensor<?x96xf32> to tensor<?x96xbf16>
  %logits = tensor.expand_shape %l2t [[0, 1], [2]] output_shape [%B, %S, 96] : tensor<?x96xbf16> into tensor<?x?x96xbf16>
  %lfull = tensor.empty(%B, %S) : tensor<?x?x96xbf16>
  %c30 = arith.constant 30.0 : bf16
  %cap = linalg.fill ins(%c30 : bf16) outs(%lfull : tensor<?x?x96xbf16>) -> tensor<?x?x96xbf16>
  %ld = arith.divf %logits, %cap : tensor<?x?x96xbf16>
  %lt = math.tanh %ld : tensor<?x?x96xbf16>
  %lc = arith.mulf %lt, %cap : tensor<?x?x96xbf16>
  return %lc : tensor<?x?x96xbf16>
}
