// RUN: tessera-opt %s -p 'builtin.module(tessera-shard-tensor-parallel{ranks=2 rank=1}, canonicalize, cse)' | filecheck %s
// RUN: tessera-opt %s -p 'builtin.module(tessera-shard-tensor-parallel{ranks=4 rank=3}, canonicalize, cse)' | filecheck %s --check-prefix=FOUR
// RUN: tessera-opt %s -p 'builtin.module(tessera-shard-tensor-parallel{ranks=1 rank=0})' | filecheck %s --check-prefix=ONE

// One decoder block in mid-level form (Gemma 2's norms around each half): 4 query heads and
// 2 kv heads of dim 2, an MLP of intermediate size 8, a vocabulary of 16 whose table is
// tied to the LM head. Rank 1 of 2 keeps query heads 2-3, kv head 1, MLP columns 4-7 and
// vocabulary rows 8-15; every weight records its slice; the collectives take a communicator
// argument. The all-reduces directly follow the output projection and the MLP, before the
// post norms; the lookup's rows are summed too, and the logits (softcapped per slice) are
// gathered along the vocabulary.
// CHECK: module attributes {tessera.tensor_parallel = {rank = 1 : i64, ranks = 2 : i64}}
// CHECK-LABEL: func.func @forward(
// CHECK-SAME: %[[IDS:[a-z0-9]+]]: tensor<?x?xi64> {tessera.input = "input_ids", tessera.range = array<i64: 0, 16>}
// CHECK-SAME: %[[EMBED:[a-z0-9]+]]: tensor<8x8xf32> {tessera.shard = {axis = 0 : i64, offset = 8 : i64, size = 8 : i64}, tessera.weight = "embed"}
// CHECK-SAME: %[[NORM:[a-z0-9]+]]: tensor<8xf32> {tessera.weight = "norm"}
// CHECK-SAME: %[[WQ:[a-z0-9]+]]: tensor<4x8xf32> {tessera.shard = {axis = 0 : i64, offset = 4 : i64, size = 4 : i64}, tessera.weight = "q"}
// CHECK-SAME: %[[WK:[a-z0-9]+]]: tensor<2x8xf32> {tessera.shard = {axis = 0 : i64, offset = 2 : i64, size = 2 : i64}, tessera.weight = "k"}
// CHECK-SAME: %[[WV:[a-z0-9]+]]: tensor<2x8xf32> {tessera.shard = {axis = 0 : i64, offset = 2 : i64, size = 2 : i64}, tessera.weight = "v"}
// CHECK-SAME: %[[WO:[a-z0-9]+]]: tensor<8x4xf32> {tessera.shard = {axis = 1 : i64, offset = 4 : i64, size = 4 : i64}, tessera.weight = "o"}
// CHECK-SAME: %[[POST:[a-z0-9]+]]: tensor<8xf32> {tessera.weight = "post"}
// CHECK-SAME: %[[GATE:[a-z0-9]+]]: tensor<4x8xf32> {tessera.shard = {axis = 0 : i64, offset = 4 : i64, size = 4 : i64}, tessera.weight = "gate"}
// CHECK-SAME: %[[UP:[a-z0-9]+]]: tensor<4x8xf32> {tessera.shard = {axis = 0 : i64, offset = 4 : i64, size = 4 : i64}, tessera.weight = "up"}
// CHECK-SAME: %[[DOWN:[a-z0-9]+]]: tensor<8x4xf32> {tessera.shard = {axis = 1 : i64, offset = 4 : i64, size = 4 : i64}, tessera.weight = "down"}
// CHECK-SAME: %[[COMM:[a-z0-9]+]]: tensor<1xi64> {tessera.weight = "tessera.communicator"}
// CHECK-SAME: -> tensor<?x?x16xf32>
// The lookup reads this rank's rows (8-15) with clamped ids; other tokens' rows are zeroed.
// CHECK: %[[LOCAL:.*]] = linalg.generic {{.*}} ins(%[[IDS]] : tensor<?x?xi64>)
// CHECK: arith.subi %{{.*}}, %c8_i64 : i64
// CHECK: %[[ROWS:.*]] = "tessera.tensor.lookup"(%[[EMBED]], %[[LOCAL]]) {scale = 2.000000e+00 : f32} : (tensor<8x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
// CHECK: %[[MASKED:.*]] = linalg.generic {{.*}} ins(%[[ROWS]], %[[IDS]] : tensor<?x?x8xf32>, tensor<?x?xi64>)
// CHECK: %[[X:.*]] = "tessera.collective.all_reduce"(%[[MASKED]], %[[COMM]]) {ranks = 2 : i64} : (tensor<?x?x8xf32>, tensor<1xi64>) -> tensor<?x?x8xf32>
// CHECK: "tessera.region"(%[[X]])
// CHECK: %[[Q:.*]] = "tessera.mma.proj"(%{{.*}}, %[[WQ]]) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<4x8xf32>) -> tensor<?x?x4xf32>
// CHECK: tensor.expand_shape %[[Q]] {{\[\[}}0], [1], [2, 3]] output_shape [%{{.*}}, %{{.*}}, 2, 2] : tensor<?x?x4xf32> into tensor<?x?x2x2xf32>
// CHECK: "tessera.rope.apply"({{.*}}) {{.*}} : (tensor<?x?x2x2xf32>, tensor<?x?xi64>) -> tensor<?x?x2x2xf32>
// CHECK: %[[K:.*]] = "tessera.mma.proj"(%{{.*}}, %[[WK]]) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<2x8xf32>) -> tensor<?x?x2xf32>
// CHECK: tensor.expand_shape %[[K]] {{.*}} into tensor<?x?x1x2xf32>
// CHECK: %[[ATT:.*]] = "tessera.attention.flash"({{.*}}) {causal = true, scale = 0.707106769 : f32} : (tensor<?x2x?x2xf32>, tensor<?x1x?x2xf32>, tensor<?x1x?x2xf32>) -> tensor<?x2x?x2xf32>
// CHECK: tensor.collapse_shape {{.*}} : tensor<?x?x2x2xf32> into tensor<?x4xf32>
// CHECK: %[[O:.*]] = "tessera.mma.proj"(%{{.*}}, %[[WO]]) {transpose_w = true} : (tensor<?x4xf32>, tensor<8x4xf32>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[OSUM:.*]] = "tessera.collective.all_reduce"(%[[O]], %[[COMM]]) {ranks = 2 : i64} : (tensor<?x8xf32>, tensor<1xi64>) -> tensor<?x8xf32>
// CHECK-NEXT: %[[OE:.*]] = tensor.expand_shape %[[OSUM]]
// CHECK-NEXT: "tessera.norm.rms"(%[[OE]], %[[POST]])
// CHECK: %[[M:.*]] = "tessera.mlp.swi_glu"(%{{.*}}, %[[GATE]], %[[UP]], %[[DOWN]]) {activation = "gelu_tanh"} : (tensor<?x?x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8x4xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT: %[[MSUM:.*]] = "tessera.collective.all_reduce"(%[[M]], %[[COMM]]) {ranks = 2 : i64}
// CHECK-NEXT: "tessera.norm.rms"(%[[MSUM]], %[[POST]])
// CHECK: %[[LOGITS:.*]] = "tessera.mma.proj"(%{{.*}}, %[[EMBED]]) {softcap = 3.000000e+01 : f32, transpose_w = true} : (tensor<?x?x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT: %[[ALL:.*]] = "tessera.collective.all_gather"(%[[LOGITS]], %[[COMM]]) {axis = 2 : i64, ranks = 2 : i64} : (tensor<?x?x8xf32>, tensor<1xi64>) -> tensor<?x?x16xf32>
// CHECK-NEXT: return %[[ALL]] : tensor<?x?x16xf32>

// Rank 3 of 4: one query head (3), and with only two kv heads the one it reads (head 1,
// which rank 2 keeps too); a quarter of the MLP and of the vocabulary.
// FOUR: module attributes {tessera.tensor_parallel = {rank = 3 : i64, ranks = 4 : i64}}
// FOUR-LABEL: func.func @forward(
// FOUR-SAME: tensor<4x8xf32> {tessera.shard = {axis = 0 : i64, offset = 12 : i64, size = 4 : i64}, tessera.weight = "embed"}
// FOUR-SAME: tensor<2x8xf32> {tessera.shard = {axis = 0 : i64, offset = 6 : i64, size = 2 : i64}, tessera.weight = "q"}
// FOUR-SAME: tensor<2x8xf32> {tessera.shard = {axis = 0 : i64, offset = 2 : i64, size = 2 : i64}, tessera.weight = "k"}
// FOUR-SAME: tensor<2x8xf32> {tessera.shard = {axis = 0 : i64, offset = 2 : i64, size = 2 : i64}, tessera.weight = "v"}
// FOUR-SAME: tensor<8x2xf32> {tessera.shard = {axis = 1 : i64, offset = 6 : i64, size = 2 : i64}, tessera.weight = "o"}
// FOUR-SAME: tensor<2x8xf32> {tessera.shard = {axis = 0 : i64, offset = 6 : i64, size = 2 : i64}, tessera.weight = "gate"}
// FOUR-SAME: tensor<8x2xf32> {tessera.shard = {axis = 1 : i64, offset = 6 : i64, size = 2 : i64}, tessera.weight = "down"}
// FOUR: "tessera.attention.flash"{{.*}} : (tensor<?x1x?x2xf32>, tensor<?x1x?x2xf32>, tensor<?x1x?x2xf32>) -> tensor<?x1x?x2xf32>
// FOUR: "tessera.collective.all_gather"{{.*}} {axis = 2 : i64, ranks = 4 : i64} : (tensor<?x?x4xf32>, tensor<1xi64>) -> tensor<?x?x16xf32>

// One rank: nothing changes.
// ONE-NOT: tessera.collective
// ONE-NOT: tessera.shard
// ONE: tensor<16x8xf32> {tessera.weight = "embed"}
// ONE-NOT: tessera.collective

func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"},
                   %embed: tensor<16x8xf32> {tessera.weight = "embed"},
                   %norm: tensor<8xf32> {tessera.weight = "norm"},
                   %wq: tensor<8x8xf32> {tessera.weight = "q"},
                   %wk: tensor<4x8xf32> {tessera.weight = "k"},
                   %wv: tensor<4x8xf32> {tessera.weight = "v"},
                   %wo: tensor<8x8xf32> {tessera.weight = "o"},
                   %post: tensor<8xf32> {tessera.weight = "post"},
                   %gate: tensor<8x8xf32> {tessera.weight = "gate"},
                   %up: tensor<8x8xf32> {tessera.weight = "up"},
                   %down: tensor<8x8xf32> {tessera.weight = "down"}) -> tensor<?x?x16xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%embed, %ids) {scale = 2.0 : f32} : (tensor<16x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %h = "tessera.region"(%x) ({
  ^bb0(%r: tensor<?x?x8xf32>):
    %n = "tessera.norm.rms"(%r, %norm) {eps = 1.0e-6 : f32} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
    %q = "tessera.mma.proj"(%n, %wq) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
    %q4 = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [%B, %S, 4, 2] : tensor<?x?x8xf32> into tensor<?x?x4x2xf32>
    %qr = "tessera.rope.apply"(%q4, %ids) {theta = 1.0e4 : f32} : (tensor<?x?x4x2xf32>, tensor<?x?xi64>) -> tensor<?x?x4x2xf32>
    %qe = tensor.empty(%B, %S) : tensor<?x4x?x2xf32>
    %qt = linalg.transpose ins(%qr : tensor<?x?x4x2xf32>) outs(%qe : tensor<?x4x?x2xf32>) permutation = [0, 2, 1, 3]
    %k = "tessera.mma.proj"(%n, %wk) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<4x8xf32>) -> tensor<?x?x4xf32>
    %k4 = tensor.expand_shape %k [[0], [1], [2, 3]] output_shape [%B, %S, 2, 2] : tensor<?x?x4xf32> into tensor<?x?x2x2xf32>
    %kr = "tessera.rope.apply"(%k4, %ids) {theta = 1.0e4 : f32} : (tensor<?x?x2x2xf32>, tensor<?x?xi64>) -> tensor<?x?x2x2xf32>
    // k and v share one destination, as canonicalize leaves them.
    %kve = tensor.empty(%B, %S) : tensor<?x2x?x2xf32>
    %kt = linalg.transpose ins(%kr : tensor<?x?x2x2xf32>) outs(%kve : tensor<?x2x?x2xf32>) permutation = [0, 2, 1, 3]
    %v = "tessera.mma.proj"(%n, %wv) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<4x8xf32>) -> tensor<?x?x4xf32>
    %v4 = tensor.expand_shape %v [[0], [1], [2, 3]] output_shape [%B, %S, 2, 2] : tensor<?x?x4xf32> into tensor<?x?x2x2xf32>
    %vt = linalg.transpose ins(%v4 : tensor<?x?x2x2xf32>) outs(%kve : tensor<?x2x?x2xf32>) permutation = [0, 2, 1, 3]
    %a = "tessera.attention.flash"(%qt, %kt, %vt) {causal = true, scale = 0.707106769 : f32} : (tensor<?x4x?x2xf32>, tensor<?x2x?x2xf32>, tensor<?x2x?x2xf32>) -> tensor<?x4x?x2xf32>
    %ae = tensor.empty(%B, %S) : tensor<?x?x4x2xf32>
    %at = linalg.transpose ins(%a : tensor<?x4x?x2xf32>) outs(%ae : tensor<?x?x4x2xf32>) permutation = [0, 2, 1, 3]
    %ac = tensor.collapse_shape %at [[0, 1], [2, 3]] : tensor<?x?x4x2xf32> into tensor<?x8xf32>
    %o = "tessera.mma.proj"(%ac, %wo) {transpose_w = true} : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
    %oe = tensor.expand_shape %o [[0, 1], [2]] output_shape [%B, %S, 8] : tensor<?x8xf32> into tensor<?x?x8xf32>
    %pn = "tessera.norm.rms"(%oe, %post) {eps = 1.0e-6 : f32} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
    %r1 = arith.addf %r, %pn : tensor<?x?x8xf32>
    %m = "tessera.mlp.swi_glu"(%r1, %gate, %up, %down) {activation = "gelu_tanh"} : (tensor<?x?x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
    %mn = "tessera.norm.rms"(%m, %post) {eps = 1.0e-6 : f32} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
    %r2 = arith.addf %r1, %mn : tensor<?x?x8xf32>
    "tessera.yield"(%r2) : (tensor<?x?x8xf32>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64} : (tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %logits = "tessera.mma.proj"(%h, %embed) {softcap = 30.0 : f32, transpose_w = true} : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}
