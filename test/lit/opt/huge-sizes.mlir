// The CPU kernels unroll their inner loops by some of an op's static sizes (rms norm's and
// lookup's row, rope's head, attention's head dims and tiles); 2^31 there took the lowering
// past 8 GiB or minutes. Such sizes must lie in [1, 65536] and are refused at the op
// otherwise; sizes that are only loop bounds (a projection's N) are not limited.
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-lower-to-cpu{isa=avx2 threads=1})' -o /dev/null

func.func @rms_row_of_2_31(%x: tensor<?x?x2147483648xbf16>, %w: tensor<2147483648xbf16>) -> tensor<?x?x2147483648xbf16> {
  // expected-error@+1 {{'tessera.norm.rms' op x tensor<?x?x2147483648xbf16> on axis 2 is 2147483648; the cpu kernel unrolls its loops by this size and takes 1 to 65536}}
  %y = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<?x?x2147483648xbf16>, tensor<2147483648xbf16>) -> tensor<?x?x2147483648xbf16>
  return %y : tensor<?x?x2147483648xbf16>
}

// -----

func.func @lookup_row_of_2_32(%t: tensor<100x4294967296xbf16>, %ids: tensor<?x?xi32>) -> tensor<?x?x4294967296xbf16> {
  // expected-error@+1 {{'tessera.tensor.lookup' op table tensor<100x4294967296xbf16> on axis 1 is 4294967296}}
  %y = "tessera.tensor.lookup"(%t, %ids) : (tensor<100x4294967296xbf16>, tensor<?x?xi32>) -> tensor<?x?x4294967296xbf16>
  return %y : tensor<?x?x4294967296xbf16>
}

// -----

func.func @rope_head_of_2_31(%x: tensor<?x?x2x2147483648xf32>, %p: tensor<?x?xi64>) -> tensor<?x?x2x2147483648xf32> {
  // expected-error@+1 {{'tessera.rope.apply' op x tensor<?x?x2x2147483648xf32> on axis 3 is 2147483648}}
  %y = "tessera.rope.apply"(%x, %p) {theta = 10000.0 : f32} : (tensor<?x?x2x2147483648xf32>, tensor<?x?xi64>) -> tensor<?x?x2x2147483648xf32>
  return %y : tensor<?x?x2x2147483648xf32>
}

// -----

func.func @attention_tile_of_2_31(%q: tensor<?x2x?x32xf32>, %k: tensor<?x2x?x32xf32>) -> tensor<?x2x?x32xf32> {
  // expected-error@+1 {{'tessera.attention.flash' op the key tile is 2147483648}}
  %o = "tessera.attention.flash"(%q, %k, %k) {scale = 0.25 : f32, tile = array<i64: 64, 2147483648, 16>} : (tensor<?x2x?x32xf32>, tensor<?x2x?x32xf32>, tensor<?x2x?x32xf32>) -> tensor<?x2x?x32xf32>
  return %o : tensor<?x2x?x32xf32>
}

// -----

// A zero head dim left the matmul blocking nothing to divide by.
func.func @attention_head_dim_of_0(%q: tensor<?x2x?x0xf32>, %k: tensor<?x2x?x0xf32>) -> tensor<?x2x?x0xf32> {
  // expected-error@+1 {{'tessera.attention.flash' op q tensor<?x2x?x0xf32> on axis 3 is 0; the cpu kernel unrolls its loops by this size and takes 1 to 65536}}
  %o = "tessera.attention.flash"(%q, %k, %k) {scale = 0.25 : f32} : (tensor<?x2x?x0xf32>, tensor<?x2x?x0xf32>, tensor<?x2x?x0xf32>) -> tensor<?x2x?x0xf32>
  return %o : tensor<?x2x?x0xf32>
}

// -----

func.func @projection_of_2_31_columns_lowers(%x: tensor<?x40xf32>, %w: tensor<40x2147483648xf32>) -> tensor<?x2147483648xf32> {
  %y = "tessera.mma.proj"(%x, %w) : (tensor<?x40xf32>, tensor<40x2147483648xf32>) -> tensor<?x2147483648xf32>
  return %y : tensor<?x2147483648xf32>
}
