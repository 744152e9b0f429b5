// RUN: tessera-opt %s --split-input-file --verify-diagnostics

func.func @gqa_heads_must_divide(%q: tensor<1x6x8x16xf32>, %k: tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32> {
  // expected-error@+1 {{query heads (6) must be a multiple of kv heads (4)}}
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.25 : f32} : (tensor<1x6x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x6x8x16xf32>
  return %0 : tensor<1x6x8x16xf32>
}

// -----

func.func @attention_wrong_rank(%q: tensor<6x8x16xf32>) -> tensor<6x8x16xf32> {
  // expected-error@+1 {{operand #0 ('q') must be a ranked tensor of rank 4}}
  %0 = "tessera.attention.flash"(%q, %q, %q) {scale = 0.25 : f32} : (tensor<6x8x16xf32>, tensor<6x8x16xf32>, tensor<6x8x16xf32>) -> tensor<6x8x16xf32>
  return %0 : tensor<6x8x16xf32>
}

// -----

func.func @attention_missing_scale(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error@+1 {{requires attribute 'scale'}}
  %0 = "tessera.attention.flash"(%q, %q, %q) {causal = true} : (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32>
  return %0 : tensor<1x2x8x16xf32>
}

// -----

func.func @attention_scale_must_be_f32(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error@+1 {{attribute 'scale' must be a 32-bit float attribute}}
  %0 = "tessera.attention.flash"(%q, %q, %q) {scale = 2.5e-01 : f64} : (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32>
  return %0 : tensor<1x2x8x16xf32>
}

// -----

func.func @attention_tile_needs_three(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error@+1 {{attribute 'tile' must be a dense i64 array of 3 elements}}
  %0 = "tessera.attention.flash"(%q, %q, %q) {scale = 0.25 : f32, tile = array<i64: 64, 64>} : (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32>
  return %0 : tensor<1x2x8x16xf32>
}

// -----

func.func @attention_window_needs_causal(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error@+1 {{window requires causal = true}}
  %0 = "tessera.attention.flash"(%q, %q, %q) {scale = 0.25 : f32, window = 4 : i64} : (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32>
  return %0 : tensor<1x2x8x16xf32>
}

// -----

func.func @attention_dtypes_must_agree(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xbf16>) -> tensor<1x2x8x16xf32> {
  // expected-error@+1 {{must share one element type}}
  %0 = "tessera.attention.flash"(%q, %k, %k) {scale = 0.25 : f32} : (tensor<1x2x8x16xf32>, tensor<1x2x8x16xbf16>, tensor<1x2x8x16xbf16>) -> tensor<1x2x8x16xf32>
  return %0 : tensor<1x2x8x16xf32>
}

// -----

func.func @attention_unknown_attribute(%q: tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32> {
  // expected-error@+1 {{has unknown attribute 'causl'}}
  %0 = "tessera.attention.flash"(%q, %q, %q) {causl = true, scale = 0.25 : f32} : (tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x2x8x16xf32>
  return %0 : tensor<1x2x8x16xf32>
}

// -----

func.func @norm_weight_width(%x: tensor<2x8xf32>, %w: tensor<4xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{weight has 4 elements but x's last dim is 8}}
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<4xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @norm_needs_eps(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{requires attribute 'eps'}}
  %0 = "tessera.norm.rms"(%x, %w) : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @norm_wrong_operand_count(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{expects 2 operands (x, w), found 1}}
  %0 = "tessera.norm.rms"(%x) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @rope_positions_must_match(%x: tensor<1x8x2x16xf32>, %p: tensor<1x4xi64>) -> tensor<1x8x2x16xf32> {
  // expected-error@+1 {{positions sequence dim 4 does not match x's 8}}
  %0 = "tessera.rope.apply"(%x, %p) {theta = 1.0e+04 : f32} : (tensor<1x8x2x16xf32>, tensor<1x4xi64>) -> tensor<1x8x2x16xf32>
  return %0 : tensor<1x8x2x16xf32>
}

// -----

func.func @rope_rotary_dim_even(%x: tensor<1x8x2x16xf32>, %p: tensor<1x8xi64>) -> tensor<1x8x2x16xf32> {
  // expected-error@+1 {{rotary_dim must be positive and even, found 5}}
  %0 = "tessera.rope.apply"(%x, %p) {theta = 1.0e+04 : f32, rotary_dim = 5 : i64} : (tensor<1x8x2x16xf32>, tensor<1x8xi64>) -> tensor<1x8x2x16xf32>
  return %0 : tensor<1x8x2x16xf32>
}

// -----

func.func @proj_inner_dims(%x: tensor<2x8xf32>, %w: tensor<16x4xf32>) -> tensor<2x16xf32> {
  // expected-error@+1 {{x's last dim 8 does not match w's K 4}}
  %0 = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<2x8xf32>, tensor<16x4xf32>) -> tensor<2x16xf32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @mlp_activation_choices(%x: tensor<2x8xf32>, %g: tensor<16x8xf32>, %d: tensor<8x16xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{attribute 'activation' must be one of the strings "gelu_tanh", "silu", "gelu"}}
  %0 = "tessera.mlp.swi_glu"(%x, %g, %g, %d) {activation = "relu"} : (tensor<2x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @lookup_result_rank(%t: tensor<32x8xf32>, %ids: tensor<2x3xi64>) -> tensor<2x8xf32> {
  // expected-error@+1 {{result rank must be the ids' rank plus one (3), found 2}}
  %0 = "tessera.tensor.lookup"(%t, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<2x3xi64>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @unknown_tessera_op(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{unknown op 'tessera.norm.layer' in the tessera dialect}}
  %0 = "tessera.norm.layer"(%x) : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @region_must_yield(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{expects its block to end in 'tessera.yield'}}
  %0 = "tessera.region"(%x) ({
  ^bb0(%a: tensor<2x8xf32>):
    "test.terminator"(%a) : (tensor<2x8xf32>) -> ()
  }) {label = "model.layers.0"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @region_yield_types(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{yields (tensor<2x8xbf16>) but its results are (tensor<2x8xf32>)}}
  %0 = "tessera.region"(%x) ({
  ^bb0(%a: tensor<2x8xf32>):
    %t = arith.truncf %a : tensor<2x8xf32> to tensor<2x8xbf16>
    "tessera.yield"(%t) : (tensor<2x8xbf16>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64, kind = "global"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @region_kind_choices(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{attribute 'kind' must be one of the strings "global", "sliding"}}
  %0 = "tessera.region"(%x) ({
  ^bb0(%a: tensor<2x8xf32>):
    "tessera.yield"(%a) : (tensor<2x8xf32>) -> ()
  }) {label = "model.layers.0", kind = "local"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @yield_outside_region(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{must be inside a 'tessera.region'}}
  "tessera.yield"(%x) : (tensor<2x8xf32>) -> ()
  return %x : tensor<2x8xf32>
}

// -----

func.func @greedy_inner_dims(%x: tensor<2x1x8xf32>, %w: tensor<16x4xf32>) -> tensor<2x1xi64> {
  // expected-error@+1 {{x's last dim 8 does not match w's K 4 (w is [N, K])}}
  %0 = "tessera.sample.greedy"(%x, %w) : (tensor<2x1x8xf32>, tensor<16x4xf32>) -> tensor<2x1xi64>
  return %0 : tensor<2x1xi64>
}

// -----

func.func @greedy_result_dims(%x: tensor<2x1x8xf32>, %w: tensor<16x8xf32>) -> tensor<2x16xi64> {
  // expected-error@+1 {{result tensor<2x16xi64> must have x's leading dims [2, 1]}}
  %0 = "tessera.sample.greedy"(%x, %w) : (tensor<2x1x8xf32>, tensor<16x8xf32>) -> tensor<2x16xi64>
  return %0 : tensor<2x16xi64>
}

// -----

func.func @greedy_token_type(%x: tensor<2x8xf32>, %w: tensor<16x8xf32>) -> tensor<2xi32> {
  // expected-error@+1 {{result #0 ('token') must be a ranked tensor of i64, found tensor<2xi32>}}
  %0 = "tessera.sample.greedy"(%x, %w) : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2xi32>
  return %0 : tensor<2xi32>
}

// -----

func.func @greedy_weight_dtype(%x: tensor<2x8xf32>, %w: tensor<16x8xbf16>) -> tensor<2xi64> {
  // expected-error@+1 {{w holds bf16 but x holds f32}}
  %0 = "tessera.sample.greedy"(%x, %w) : (tensor<2x8xf32>, tensor<16x8xbf16>) -> tensor<2xi64>
  return %0 : tensor<2xi64>
}
