// RUN: tessera-opt %s --split-input-file --verify-diagnostics

// The KV-cache ops' verifiers: tessera.kv.append and tessera.attention.paged.

func.func @append_cache_is_memory(%c: tensor<4x2x16x8xf32>, %k: tensor<1x2x3x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) {
  // expected-error@+1 {{operand #0 ('k_cache') must be a ranked memref of rank 4 of f16/bf16/f32/f64, found tensor<4x2x16x8xf32>}}
  "tessera.kv.append"(%c, %c, %k, %k, %t, %i) : (tensor<4x2x16x8xf32>, tensor<4x2x16x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2xi32>, tensor<1xi64>) -> ()
  return
}

// -----

func.func @append_heads_match_the_cache(%c: memref<4x2x16x8xf32>, %k: tensor<1x4x3x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) {
  // expected-error@+1 {{k tensor<1x4x3x8xf32> must match k_cache memref<4x2x16x8xf32> in kv heads and head dim}}
  "tessera.kv.append"(%c, %c, %k, %k, %t, %i) : (memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x4x3x8xf32>, tensor<1x4x3x8xf32>, tensor<1x2xi32>, tensor<1xi64>) -> ()
  return
}

// -----

func.func @append_keeps_the_dtype(%c: memref<4x2x16x8xbf16>, %k: tensor<1x2x3x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) {
  // expected-error@+1 {{k (f32) and k_cache (bf16) must share one element type}}
  "tessera.kv.append"(%c, %c, %k, %k, %t, %i) : (memref<4x2x16x8xbf16>, memref<4x2x16x8xbf16>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2xi32>, tensor<1xi64>) -> ()
  return
}

// -----

func.func @append_table_holds_integers(%c: memref<4x2x16x8xf32>, %k: tensor<1x2x3x8xf32>, %t: tensor<1x2xf32>, %i: tensor<1xi64>) {
  // expected-error@+1 {{operand #4 ('block_table') must be a ranked tensor of rank 2 of i32/i64, found tensor<1x2xf32>}}
  "tessera.kv.append"(%c, %c, %k, %k, %t, %i) : (memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2xf32>, tensor<1xi64>) -> ()
  return
}

// -----

func.func @append_one_row_per_sequence(%c: memref<4x2x16x8xf32>, %k: tensor<2x2x3x8xf32>, %t: tensor<3x2xi32>, %i: tensor<2xi64>) {
  // expected-error@+1 {{block_table tensor<3x2xi32> must have one row per sequence}}
  "tessera.kv.append"(%c, %c, %k, %k, %t, %i) : (memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<2x2x3x8xf32>, tensor<2x2x3x8xf32>, tensor<3x2xi32>, tensor<2xi64>) -> ()
  return
}

// -----

func.func @append_caches_agree(%kc: memref<4x2x16x8xf32>, %vc: memref<4x2x8x8xf32>, %k: tensor<1x2x3x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) {
  // expected-error@+1 {{k_cache memref<4x2x16x8xf32> and v_cache memref<4x2x8x8xf32> must agree on block size}}
  "tessera.kv.append"(%kc, %vc, %k, %k, %t, %i) : (memref<4x2x16x8xf32>, memref<4x2x8x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2xi32>, tensor<1xi64>) -> ()
  return
}

// -----

func.func @paged_heads_divide(%q: tensor<1x3x1x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) -> tensor<1x3x1x8xf32> {
  // expected-error@+1 {{query heads (3) must be a multiple of kv heads (2)}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %i) {scale = 0.25 : f32} : (tensor<1x3x1x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2xi32>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x3x1x8xf32>
  return %o : tensor<1x3x1x8xf32>
}

// -----

func.func @paged_result_shape(%q: tensor<1x4x1x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) -> tensor<1x4x2x8xf32> {
  // expected-error@+1 {{result tensor<1x4x2x8xf32> must have shape [B, Hq, S, Dv] = [1, 4, 1, 8]}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %i) {scale = 0.25 : f32} : (tensor<1x4x1x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2xi32>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x2x8xf32>
  return %o : tensor<1x4x2x8xf32>
}

// -----

func.func @paged_window_positive(%q: tensor<1x4x1x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) -> tensor<1x4x1x8xf32> {
  // expected-error@+1 {{window must be positive, found 0}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %i) {scale = 0.25 : f32, window = 0 : i64} : (tensor<1x4x1x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2xi32>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x1x8xf32>
  return %o : tensor<1x4x1x8xf32>
}

// -----

func.func @paged_start_per_sequence(%q: tensor<2x4x1x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<2x2xi32>, %i: tensor<2xi64>, %s: tensor<3xi64>) -> tensor<2x4x1x8xf32> {
  // expected-error@+1 {{tensor<3xi64> must have one entry per sequence (batch 2)}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %s) {scale = 0.25 : f32} : (tensor<2x4x1x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<2x2xi32>, tensor<2xi64>, tensor<3xi64>) -> tensor<2x4x1x8xf32>
  return %o : tensor<2x4x1x8xf32>
}

// -----

func.func @paged_needs_a_scale(%q: tensor<1x4x1x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) -> tensor<1x4x1x8xf32> {
  // expected-error@+1 {{requires attribute 'scale'}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %i) : (tensor<1x4x1x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2xi32>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x1x8xf32>
  return %o : tensor<1x4x1x8xf32>
}

// -----

// tessera.layout = "bshd" (the CUDA target's head-transpose folding): k [B, S, Hkv, D]; the
// verifier reads its heads from axis 2, so heads on axis 1 that match the cache are wrong here.
func.func @append_bshd_reads_heads_from_axis_2(%c: memref<4x2x16x8xf32>, %k: tensor<1x2x3x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) {
  // expected-error@+1 {{k tensor<1x2x3x8xf32> must match k_cache memref<4x2x16x8xf32> in kv heads and head dim}}
  "tessera.kv.append"(%c, %c, %k, %k, %t, %i) {tessera.layout = "bshd"} : (memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2xi32>, tensor<1xi64>) -> ()
  return
}

// -----

func.func @paged_layout_is_bshd_or_absent(%q: tensor<1x4x1x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) -> tensor<1x4x1x8xf32> {
  // expected-error@+1 {{tessera.layout must be "bshd", found "sbhd"}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %i) {scale = 0.35 : f32, tessera.layout = "sbhd"} : (tensor<1x4x1x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2xi32>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x1x8xf32>
  return %o : tensor<1x4x1x8xf32>
}

// -----

// bshd: q [B, S, Hq, D] = [1, 1, 4, 8] gives a [1, 1, 4, 8] result; [1, 4, 1, 8] is wrong.
func.func @paged_bshd_result_keeps_the_layout(%q: tensor<1x1x4x8xf32>, %c: memref<4x2x16x8xf32>, %t: tensor<1x2xi32>, %i: tensor<1xi64>) -> tensor<1x4x1x8xf32> {
  // expected-error@+1 {{must have shape [B, Hq, S, Dv]}}
  %o = "tessera.attention.paged"(%q, %c, %c, %t, %i, %i) {scale = 0.35 : f32, tessera.layout = "bshd"} : (tensor<1x1x4x8xf32>, memref<4x2x16x8xf32>, memref<4x2x16x8xf32>, tensor<1x2xi32>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x1x8xf32>
  return %o : tensor<1x4x1x8xf32>
}
