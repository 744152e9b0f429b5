// RUN: tessera-opt %s -p 'builtin.module(tessera-insert-kv-cache{block-size=4}, canonicalize, cse, tessera-cpu-share-kv-body)' | filecheck %s
// RUN: tessera-opt %s -p 'builtin.module(tessera-insert-kv-cache{block-size=4}, canonicalize, cse, tessera-cpu-share-kv-body, tessera-lower-to-cpu{isa=avx512 threads=2})' | filecheck %s --check-prefix=LOWER

// @prefill_kv and @decode (tessera-insert-kv-cache) become thin entries over one private body,
// compiled once and kept out of line: @decode casts its [B, 1] ids and positions to the
// body's types. The forward function is left alone.
// CHECK-LABEL: func.func @forward(
// CHECK: "tessera.attention.flash"
// CHECK-LABEL: func.func @prefill_kv(
// CHECK-SAME: -> (tensor<?x?x32xf32> {tessera.output = "logits"})
// CHECK-NEXT: %[[R:.*]] = call @tessera_kv_step(%arg0, %arg1, %arg2, %arg3, %arg4, %arg5, %arg6, %arg7, %arg8, %arg9, %arg10) {no_inline}
// CHECK-NEXT: return %[[R]]
// CHECK-LABEL: func.func @decode(
// CHECK-SAME: %arg0: tensor<?x1xi64>
// CHECK-DAG: %[[IDS:.*]] = tensor.cast %arg0 : tensor<?x1xi64> to tensor<?x?xi64>
// CHECK-DAG: %[[POS:.*]] = tensor.cast %arg2 : tensor<?x1xi64> to tensor<?x?xi64>
// CHECK: %[[D:.*]] = call @tessera_kv_step(%[[IDS]], %arg1, %[[POS]], %arg3, {{.*}}) {no_inline}
// CHECK-NEXT: return %[[D]]
// CHECK-LABEL: func.func private @tessera_kv_step(
// CHECK-SAME: attributes {passthrough = ["noinline"]}
// CHECK: "tessera.kv.append"
// CHECK: "tessera.attention.paged"

// The CPU lowering: each op becomes a call of a kernel written for its sizes. The append core
// copies each token's rows into slot t mod BS of block table[b, (t / BS) mod M], the block id
// clamped into the cache; the attention core walks the visible blocks per (batch, head) pair
// (split across threads for large work), with the online softmax carried through the loop.
// LOWER-LABEL: func.func private @tessera_kv_step(
// LOWER-NOT: tessera.
// LOWER: call @tessera_kv_append_1_8_8_4_f32_i32_i64_{{.*}}(%arg7, %arg8,
// LOWER: call @tessera_attention_paged_1_1_8_8_4_f32_i32_i64_i64_s0_3499999940395355_w4_{{.*}}(
// LOWER: call @tessera_kv_append_1_8_8_4_f32_i32_i64_{{.*}}(%arg9, %arg10,
// LOWER: call @tessera_attention_paged_1_1_8_8_4_f32_i32_i64_i64_s0_3499999940395355_c50_0_{{.*}}(
// LOWER-LABEL: func.func private @tessera_kv_append_1_8_8_4_f32_i32_i64_core(
// LOWER-SAME: %[[KC:.*]]: memref<?x1x4x8xf32>, %{{.*}}: memref<?x1x4x8xf32>, %[[K:.*]]: memref<?x1x?x8xf32>, %{{.*}}: memref<?x1x?x8xf32>, %[[T:.*]]: memref<?x?xi32>, %{{.*}}: memref<?xi64>)
// LOWER: %[[LOGICAL:.*]] = arith.divui %[[POS:.*]], %c4 : index
// LOWER-NEXT: %[[SLOT:.*]] = arith.remui %[[POS]], %c4 : index
// LOWER-NEXT: %[[COLUMN:.*]] = arith.remui %[[LOGICAL]], %{{.*}} : index
// LOWER-NEXT: %[[RAW:.*]] = memref.load %[[T]][%{{.*}}, %[[COLUMN]]] : memref<?x?xi32>
// LOWER-NEXT: %[[ID:.*]] = arith.index_cast %[[RAW]] : i32 to index
// LOWER-NEXT: %[[LOW:.*]] = arith.maxsi %[[ID]], %c0 : index
// LOWER-NEXT: %[[BLOCK:.*]] = arith.minsi %[[LOW]], %{{.*}} : index
// LOWER: vector.maskedstore %[[KC]][%[[BLOCK]], %{{.*}}, %[[SLOT]], %c0]
// LOWER-LABEL: func.func private @tessera_attention_paged_1_1_8_8_4_f32_i32_i64_i64_s0_3499999940395355_w4_core(
// LOWER: memref.alloca() : memref<4xf32>
// LOWER: scf.for %{{.*}} = %arg7 to %arg8 step %c1 {
// LOWER: scf.for {{.*}} iter_args({{.*}}) -> (f32, f32, vector<16xf32>) {
// LOWER: scf.for {{.*}} iter_args({{.*}}) -> (f32) {
// LOWER: vector.reduction <add>
// LOWER: scf.for {{.*}} iter_args({{.*}}) -> (f32, vector<16xf32>) {
// LOWER: arith.divf
// LOWER: func.func private @tessera_parallel2_tessera_attention_paged_1_1_8_8_4_f32_i32_i64_i64_s0_3499999940395355_w4_core(
#map = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %e = tensor.empty(%S) : tensor<1x?x1xi64>
  %iota = linalg.generic {indexing_maps = [#map], iterator_types = ["parallel", "parallel", "parallel"]} outs(%e : tensor<1x?x1xi64>) {
  ^bb0(%out: i64):
    %i = linalg.index 1 : index
    %v = arith.index_cast %i : index to i64
    linalg.yield %v : i64
  } -> tensor<1x?x1xi64>
  %flat = tensor.collapse_shape %iota [[0, 1, 2]] : tensor<1x?x1xi64> into tensor<?xi64>
  %pe = tensor.empty(%B, %S) : tensor<?x?xi64>
  %pos = linalg.broadcast ins(%flat : tensor<?xi64>) outs(%pe : tensor<?x?xi64>) dimensions = [0]
  %h0 = "tessera.region"(%x) ({
  ^bb0(%in: tensor<?x?x8xf32>):
    %q = tensor.expand_shape %in [[0], [1], [2, 3]] output_shape [%B, %S, 1, 8] : tensor<?x?x8xf32> into tensor<?x?x1x8xf32>
    %qr = "tessera.rope.apply"(%q, %pos) {theta = 1.0e4 : f32} : (tensor<?x?x1x8xf32>, tensor<?x?xi64>) -> tensor<?x?x1x8xf32>
    %te = tensor.empty(%B, %S) : tensor<?x1x?x8xf32>
    %qt = linalg.transpose ins(%qr : tensor<?x?x1x8xf32>) outs(%te : tensor<?x1x?x8xf32>) permutation = [0, 2, 1, 3]
    %vt = linalg.transpose ins(%q : tensor<?x?x1x8xf32>) outs(%te : tensor<?x1x?x8xf32>) permutation = [0, 2, 1, 3]
    %o = "tessera.attention.flash"(%qt, %qt, %vt) {causal = true, scale = 0.35 : f32, window = 4 : i64} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
    %oe = tensor.empty(%B, %S) : tensor<?x?x1x8xf32>
    %ot = linalg.transpose ins(%o : tensor<?x1x?x8xf32>) outs(%oe : tensor<?x?x1x8xf32>) permutation = [0, 2, 1, 3]
    %oc = tensor.collapse_shape %ot [[0], [1], [2, 3]] : tensor<?x?x1x8xf32> into tensor<?x?x8xf32>
    "tessera.yield"(%oc) : (tensor<?x?x8xf32>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64, kind = "sliding"} : (tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %h1 = "tessera.region"(%h0) ({
  ^bb0(%in: tensor<?x?x8xf32>):
    %q = tensor.expand_shape %in [[0], [1], [2, 3]] output_shape [%B, %S, 1, 8] : tensor<?x?x8xf32> into tensor<?x?x1x8xf32>
    %qr = "tessera.rope.apply"(%q, %pos) {theta = 1.0e4 : f32} : (tensor<?x?x1x8xf32>, tensor<?x?xi64>) -> tensor<?x?x1x8xf32>
    %te = tensor.empty(%B, %S) : tensor<?x1x?x8xf32>
    %qt = linalg.transpose ins(%qr : tensor<?x?x1x8xf32>) outs(%te : tensor<?x1x?x8xf32>) permutation = [0, 2, 1, 3]
    %o = "tessera.attention.flash"(%qt, %qt, %qt) {causal = true, scale = 0.35 : f32, softcap = 50.0 : f32} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
    %oe = tensor.empty(%B, %S) : tensor<?x?x1x8xf32>
    %ot = linalg.transpose ins(%o : tensor<?x1x?x8xf32>) outs(%oe : tensor<?x?x1x8xf32>) permutation = [0, 2, 1, 3]
    %oc = tensor.collapse_shape %ot [[0], [1], [2, 3]] : tensor<?x?x1x8xf32> into tensor<?x?x8xf32>
    "tessera.yield"(%oc) : (tensor<?x?x8xf32>) -> ()
  }) {label = "model.layers.1", layer = 1 : i64, kind = "global"} : (tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %logits = "tessera.mma.proj"(%h1, %table) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<32x8xf32>) -> tensor<?x?x32xf32>
  return %logits : tensor<?x?x32xf32>
}
