// The last chunks hold IR the pass refuses: the first RUN line expects tessera-opt to fail on
// them (`not`) and checks what it derives from the others; the second checks the diagnostics,
// and that no other chunk reports one.
// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-insert-kv-cache{block-size=4}, canonicalize, cse)' 2>/dev/null | filecheck %s
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-insert-kv-cache{block-size=4})' -o /dev/null
// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-insert-kv-cache{block-size=0})' 2>&1 | filecheck %s --check-prefix=SIZE
// SIZE: error: tessera-insert-kv-cache: block-size must be positive, found 0

// Two decoder blocks: a sliding layer (window 4) and a global one (softcap 50). The forward
// function stays as it was. @prefill_kv takes the rope positions, each sequence's cache index
// and first valid key, one block table per group of layers and a key and a value cache per
// layer (state, [blocks, kv heads, block size, head dim]); each flash attention becomes an
// append of the post-RoPE keys and the values, then paged attention with its scale, window and
// softcap. Every rope reads the positions argument; the sequence index is gone.
// CHECK-LABEL: func.func @forward(
// CHECK-NOT: tessera.kv.append
// CHECK: "tessera.attention.flash"
// CHECK: "tessera.attention.flash"
// CHECK-LABEL: func.func @prefill_kv(
// CHECK-SAME: %[[IDS:[a-z0-9]+]]: tensor<?x?xi64> {tessera.dims = ["B", "S"], tessera.input = "input_ids"}
// CHECK-SAME: %[[POS:[a-z0-9]+]]: tensor<?x?xi64> {tessera.dims = ["B", "S"], tessera.input = "positions"}
// CHECK-SAME: %[[IDX:[a-z0-9]+]]: tensor<?xi64> {tessera.dims = ["B"], tessera.input = "cache_index"}
// CHECK-SAME: %[[START:[a-z0-9]+]]: tensor<?xi64> {tessera.dims = ["B"], tessera.input = "kv_start"}
// CHECK-SAME: %[[SLIDING:[a-z0-9]+]]: tensor<?x?xi32> {tessera.dims = ["B", "table_sliding"], tessera.input = "block_table.sliding", tessera.kv_window = 4 : i64}
// CHECK-SAME: %[[GLOBAL:[a-z0-9]+]]: tensor<?x?xi32> {tessera.dims = ["B", "table_global"], tessera.input = "block_table.global"}
// CHECK-SAME: %[[K0:[a-z0-9]+]]: memref<?x1x4x8xf32> {tessera.dims = ["blocks_sliding", 1, 4, 8], tessera.kv_group = "sliding", tessera.kv_layer = 0 : i64, tessera.state = "kv.0.k"}
// CHECK-SAME: %[[V0:[a-z0-9]+]]: memref<?x1x4x8xf32> {{.*}}tessera.state = "kv.0.v"}
// CHECK-SAME: %[[K1:[a-z0-9]+]]: memref<?x1x4x8xf32> {tessera.dims = ["blocks_global", 1, 4, 8], tessera.kv_group = "global", tessera.kv_layer = 1 : i64, tessera.state = "kv.1.k"}
// CHECK-SAME: %[[V1:[a-z0-9]+]]: memref<?x1x4x8xf32> {{.*}}tessera.state = "kv.1.v"}
// CHECK-SAME: -> (tensor<?x?x32xf32> {tessera.output = "logits"})
// CHECK-NOT: linalg.generic
// CHECK: %[[R0:.*]] = "tessera.rope.apply"(%{{.*}}, %[[POS]])
// CHECK: %[[Q0:.*]] = linalg.transpose ins(%[[R0]]
// CHECK: %[[VT0:.*]] = linalg.transpose
// CHECK-NEXT: "tessera.kv.append"(%[[K0]], %[[V0]], %[[Q0]], %[[VT0]], %[[SLIDING]], %[[IDX]])
// CHECK-NEXT: "tessera.attention.paged"(%[[Q0]], %[[K0]], %[[V0]], %[[SLIDING]], %[[IDX]], %[[START]]) {scale = 3.500000e-01 : f32, window = 4 : i64}
// CHECK: "tessera.rope.apply"(%{{.*}}, %[[POS]])
// CHECK: "tessera.kv.append"(%[[K1]], %[[V1]], %{{.*}}, %{{.*}}, %[[GLOBAL]], %[[IDX]])
// CHECK-NEXT: "tessera.attention.paged"(%{{.*}}, %[[K1]], %[[V1]], %[[GLOBAL]], %[[IDX]], %[[START]]) {scale = 3.500000e-01 : f32, softcap = 5.000000e+01 : f32}
// CHECK-NOT: tessera.attention.flash
// CHECK: return
// @decode takes one token per sequence ([B, 1] ids and positions, cast to the body's types)
// and otherwise the same arguments.
// CHECK-LABEL: func.func @decode(
// CHECK-SAME: %[[DIDS:[a-z0-9]+]]: tensor<?x1xi64> {tessera.dims = ["B", 1], tessera.input = "input_ids"}
// CHECK-SAME: %[[DPOS:[a-z0-9]+]]: tensor<?x1xi64> {tessera.dims = ["B", 1], tessera.input = "positions"}
// CHECK-SAME: tessera.input = "block_table.global"
// CHECK-SAME: tessera.state = "kv.1.v"
// CHECK-DAG: %[[DP:.*]] = tensor.cast %[[DPOS]] : tensor<?x1xi64> to tensor<?x?xi64>
// CHECK-DAG: %[[DI:.*]] = tensor.cast %[[DIDS]] : tensor<?x1xi64> to tensor<?x?xi64>
// CHECK: "tessera.tensor.lookup"(%{{.*}}, %[[DI]])
// CHECK: "tessera.rope.apply"(%{{.*}}, %[[DP]])
// CHECK: "tessera.kv.append"
// CHECK: "tessera.attention.paged"
// CHECK: "tessera.kv.append"
// CHECK: "tessera.attention.paged"
// CHECK-NOT: tessera.attention.flash
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

// -----

// Diagnostics. A KV cache serves causal attention only.
func.func @bidirectional(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x1x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %q = tensor.expand_shape %x [[0], [1, 2], [3]] output_shape [%B, 1, %S, 8] : tensor<?x?x8xf32> into tensor<?x1x?x8xf32>
  // expected-error@+1 {{attention is not causal; a KV cache serves causal attention only}}
  %o = "tessera.attention.flash"(%q, %q, %q) {scale = 0.35 : f32} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
  return %o : tensor<?x1x?x8xf32>
}

// -----

// Positions that are not the sequence index (here an input) cannot become per-token
// positions in the cache.
func.func @positions_from_an_input(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %pos: tensor<?x?xi64> {tessera.input = "position_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x1x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %q = tensor.expand_shape %x [[0], [1], [2, 3]] output_shape [%B, %S, 1, 8] : tensor<?x?x8xf32> into tensor<?x?x1x8xf32>
  // expected-error@+1 {{rope positions are not the sequence index}}
  %qr = "tessera.rope.apply"(%q, %pos) {theta = 1.0e4 : f32} : (tensor<?x?x1x8xf32>, tensor<?x?xi64>) -> tensor<?x?x1x8xf32>
  %te = tensor.empty(%B, %S) : tensor<?x1x?x8xf32>
  %qt = linalg.transpose ins(%qr : tensor<?x?x1x8xf32>) outs(%te : tensor<?x1x?x8xf32>) permutation = [0, 2, 1, 3]
  %o = "tessera.attention.flash"(%qt, %qt, %qt) {causal = true, scale = 0.35 : f32} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
  return %o : tensor<?x1x?x8xf32>
}

// -----

// The sequence index feeds a learned position embedding besides rope: in the cached
// functions it would still count from 0 in every call.
#map = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @index_feeds_more_than_rope(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x8xf32> {
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
  %q = tensor.expand_shape %x [[0], [1], [2, 3]] output_shape [%B, %S, 1, 8] : tensor<?x?x8xf32> into tensor<?x?x1x8xf32>
  %qr = "tessera.rope.apply"(%q, %pos) {theta = 1.0e4 : f32} : (tensor<?x?x1x8xf32>, tensor<?x?xi64>) -> tensor<?x?x1x8xf32>
  %te = tensor.empty(%B, %S) : tensor<?x1x?x8xf32>
  %qt = linalg.transpose ins(%qr : tensor<?x?x1x8xf32>) outs(%te : tensor<?x1x?x8xf32>) permutation = [0, 2, 1, 3]
  %o = "tessera.attention.flash"(%qt, %qt, %qt) {causal = true, scale = 0.35 : f32} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
  %oe = tensor.empty(%B, %S) : tensor<?x?x1x8xf32>
  %ot = linalg.transpose ins(%o : tensor<?x1x?x8xf32>) outs(%oe : tensor<?x?x1x8xf32>) permutation = [0, 2, 1, 3]
  %oc = tensor.collapse_shape %ot [[0], [1], [2, 3]] : tensor<?x?x1x8xf32> into tensor<?x?x8xf32>
  // expected-error@+1 {{the sequence index also feeds 'tessera.tensor.lookup'; only rope positions can follow the tokens' places in the cache}}
  %p = "tessera.tensor.lookup"(%table, %pos) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %y = arith.addf %oc, %p : tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}

// -----

// A block's kind must agree with its attention.
func.func @kind_disagrees(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %h = "tessera.region"(%x) ({
  ^bb0(%in: tensor<?x?x8xf32>):
    %q = tensor.expand_shape %in [[0], [1, 2], [3]] output_shape [%B, 1, %S, 8] : tensor<?x?x8xf32> into tensor<?x1x?x8xf32>
    // expected-error@+1 {{the block's kind is 'global' but its attention has window 4}}
    %o = "tessera.attention.flash"(%q, %q, %q) {causal = true, scale = 0.35 : f32, window = 4 : i64} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
    %oc = tensor.collapse_shape %o [[0], [1, 2], [3]] : tensor<?x1x?x8xf32> into tensor<?x?x8xf32>
    "tessera.yield"(%oc) : (tensor<?x?x8xf32>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64, kind = "global"} : (tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  return %h : tensor<?x?x8xf32>
}

// -----

// expected-error@+1 {{@no_attention has no tessera.attention.flash (attention must fuse before a KV cache can be inserted)}}
func.func @no_attention(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x8xf32> {
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  return %x : tensor<?x?x8xf32>
}
