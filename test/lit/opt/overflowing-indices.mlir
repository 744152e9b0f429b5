// Inputs on which MLIR's verifier (run by the parser) asserts instead of reporting: refused
// before parsing, at the offending number (see tessera_ir/context.py, check_text).
// RUN: tessera-opt %s --split-input-file --verify-diagnostics

// A reassociation index whose low 32 bits are all ones: the verifier counts 2^32 dims, which
// wraps to 0 ("willBeValidAffineMap").
func.func @reassociation_minus_one(%x: tensor<?x4x?x16xf32>) -> tensor<?x?x16xf32> {
  // expected-error@+1 {{reassociation index -1 is out of range (MLIR's verifier would crash on it)}}
  %0 = tensor.collapse_shape %x [[-1, 1], [2], [3]] : tensor<?x4x?x16xf32> into tensor<?x?x16xf32>
  return %0 : tensor<?x?x16xf32>
}

// -----

func.func @reassociation_2_32_minus_1_generic(%x: tensor<?x16xf32>, %n: index) -> tensor<?x2x8xf32> {
  // expected-error@+1 {{reassociation index 4294967295 is out of range}}
  %0 = "tensor.expand_shape"(%x, %n) <{reassociation = [[0], [1, 4294967295]], static_output_shape = array<i64: -9223372036854775808, 2, 8>}> : (tensor<?x16xf32>, index) -> tensor<?x2x8xf32>
  return %0 : tensor<?x2x8xf32>
}

// -----

func.func @concat_along_minus_one(%a: tensor<2x3xf32>) -> tensor<4x3xf32> {
  // expected-error@+1 {{tensor.concat along dim -1: the dim must be at least 0}}
  %0 = tensor.concat dim(-1) %a, %a : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  return %0 : tensor<4x3xf32>
}

// -----

func.func @concat_along_minus_one_generic(%a: tensor<2x3xf32>) -> tensor<4x3xf32> {
  // expected-error@+1 {{tensor.concat along dim -1}}
  %0 = "tensor.concat"(%a, %a) <{dim = -1 : i64}> : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  return %0 : tensor<4x3xf32>
}

// -----

// 2^63 - 1 rows of 16: MLIR's element count overflows on the dense constant below. Such a
// type can hold no value, and is refused wherever it is written (first here, in the result).
// expected-error@+1 {{tensor<9223372036854775807x16x...> has 147573952589676412912 elements; MLIR counts elements in 64 bits and crashes past 2^63 - 1}}
func.func @constant_of_2_67_elements() -> tensor<9223372036854775807x16xf32> {
  %0 = arith.constant dense<0.0> : tensor<9223372036854775807x16xf32>
  return %0 : tensor<9223372036854775807x16xf32>
}

// -----

// A dense array of index elements: the parser asks index for a bit width and asserts.
func.func @index_array(%q: tensor<?x2x?x32xf32>) -> tensor<?x2x?x32xf32> {
  // expected-error@+1 {{array<index: ...> is not an array: index has no bit width}}
  %o = "tessera.attention.flash"(%q, %q, %q) {scale = 0.25 : f32, tile = array<index: 64, 64, 16>} : (tensor<?x2x?x32xf32>, tensor<?x2x?x32xf32>, tensor<?x2x?x32xf32>) -> tensor<?x2x?x32xf32>
  return %o : tensor<?x2x?x32xf32>
}

// -----

// What MLIR reports itself stays its own: a concat dim past the rank, a too-large index.
func.func @concat_past_the_rank(%a: tensor<2x3xf32>) -> tensor<4x3xf32> {
  // expected-error@+1 {{'tensor.concat' op concatenation dim must be less than the tensor rank}}
  %0 = tensor.concat dim(2) %a, %a : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  return %0 : tensor<4x3xf32>
}
