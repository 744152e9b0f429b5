// IR that MLIR's verifiers accept but that means nothing, refused by Tessera's verifier at the
// op (see dialects/upstream_gaps.py).
// RUN: tessera-opt %s --split-input-file --verify-diagnostics

// MLIR checks reassociation indices modulo 2^32: 4294967296 would pass as 0.
func.func @collapse_index_past_2_32(%x: tensor<?x4x?x16xf32>) -> tensor<?x?x16xf32> {
  // expected-error@+1 {{'tensor.collapse_shape' op reassociation index 4294967296 is out of range for the expanded rank 4}}
  %0 = tensor.collapse_shape %x [[4294967296, 1], [2], [3]] : tensor<?x4x?x16xf32> into tensor<?x?x16xf32>
  return %0 : tensor<?x?x16xf32>
}

// -----

func.func @expand_negative_index(%x: tensor<?x16xf32>, %n: index) -> tensor<?x2x8xf32> {
  // expected-error@+1 {{'tensor.expand_shape' op reassociation index -4294967296 is out of range for the expanded rank 3}}
  %0 = tensor.expand_shape %x [[-4294967296], [1, 2]] output_shape [%n, 2, 8] : tensor<?x16xf32> into tensor<?x2x8xf32>
  return %0 : tensor<?x2x8xf32>
}

// -----

func.func @valid_reshapes_pass(%x: tensor<?x4x?x16xf32>) -> tensor<?x?x16xf32> {
  %0 = tensor.collapse_shape %x [[0, 1], [2], [3]] : tensor<?x4x?x16xf32> into tensor<?x?x16xf32>
  return %0 : tensor<?x?x16xf32>
}
