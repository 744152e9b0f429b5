// Element types outside what a pass was written for: f8 constant tables reach the rope
// matcher (which cannot read their elements, so nothing fuses), a softmax on integers reaches
// the CPU lowering (refused at the op). Neither is an internal error.
// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-rope)' | filecheck %s
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-fuse-rope, tessera-lower-to-cpu{isa=avx2 threads=1})' -o /dev/null

// CHECK-LABEL: func.func @rope_with_f8_tables_is_left_alone
// CHECK-NOT: tessera.rope.apply
// CHECK: return
func.func @rope_with_f8_tables_is_left_alone(%xs: tensor<?x?x4x16xf8E4M3FN>, %pos: tensor<?x?xi64>) -> tensor<?x4x?x16xf8E4M3FN> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %xs, %c0 : tensor<?x?x4x16xf8E4M3FN>
  %S = tensor.dim %xs, %c1 : tensor<?x?x4x16xf8E4M3FN>
  %xt0 = tensor.empty(%B, %S) : tensor<?x4x?x16xf8E4M3FN>
  %x = linalg.transpose ins(%xs : tensor<?x?x4x16xf8E4M3FN>) outs(%xt0 : tensor<?x4x?x16xf8E4M3FN>) permutation = [0, 2, 1, 3]
  %inv = arith.constant dense<[1.0, 0.316227764, 0.100000001, 0.0316227786, 0.00999999978, 0.00316227786, 0.00100000005, 0.000316227786]> : tensor<8xf8E4M3FN>
  %pf = arith.sitofp %pos : tensor<?x?xi64> to tensor<?x?xf8E4M3FN>
  %e3 = tensor.empty(%B, %S) : tensor<?x?x8xf8E4M3FN>
  %pb = linalg.broadcast ins(%pf : tensor<?x?xf8E4M3FN>) outs(%e3 : tensor<?x?x8xf8E4M3FN>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<8xf8E4M3FN>) outs(%e3 : tensor<?x?x8xf8E4M3FN>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<?x?x8xf8E4M3FN>
  %emb = tensor.concat dim(2) %f, %f : (tensor<?x?x8xf8E4M3FN>, tensor<?x?x8xf8E4M3FN>) -> tensor<?x?x16xf8E4M3FN>
  %cos = math.cos %emb : tensor<?x?x16xf8E4M3FN>
  %sin = math.sin %emb : tensor<?x?x16xf8E4M3FN>
  %e4 = tensor.empty(%B, %S) : tensor<?x4x?x16xf8E4M3FN>
  %cosb = linalg.broadcast ins(%cos : tensor<?x?x16xf8E4M3FN>) outs(%e4 : tensor<?x4x?x16xf8E4M3FN>) dimensions = [1]
  %sinb = linalg.broadcast ins(%sin : tensor<?x?x16xf8E4M3FN>) outs(%e4 : tensor<?x4x?x16xf8E4M3FN>) dimensions = [1]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [%B, 4, %S, 8] [1, 1, 1, 1] : tensor<?x4x?x16xf8E4M3FN> to tensor<?x4x?x8xf8E4M3FN>
  %x2 = tensor.extract_slice %x[0, 0, 0, 8] [%B, 4, %S, 8] [1, 1, 1, 1] : tensor<?x4x?x16xf8E4M3FN> to tensor<?x4x?x8xf8E4M3FN>
  %nx2 = arith.negf %x2 : tensor<?x4x?x8xf8E4M3FN>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<?x4x?x8xf8E4M3FN>, tensor<?x4x?x8xf8E4M3FN>) -> tensor<?x4x?x16xf8E4M3FN>
  %a = arith.mulf %x, %cosb : tensor<?x4x?x16xf8E4M3FN>
  %b = arith.mulf %rh, %sinb : tensor<?x4x?x16xf8E4M3FN>
  %y = arith.addf %a, %b : tensor<?x4x?x16xf8E4M3FN>
  return %y : tensor<?x4x?x16xf8E4M3FN>
}

// -----

// CHECK-LABEL: func.func @softmax_of_integers
func.func @softmax_of_integers(%x: tensor<2x8xi8>) -> tensor<2x8xi8> {
  %e = tensor.empty() : tensor<2x8xi8>
  // expected-error@+1 {{'linalg.softmax' op has element type i8; only f16, bf16, f32 and f64 softmax can be lowered}}
  %s = linalg.softmax dimension(1) ins(%x : tensor<2x8xi8>) outs(%e : tensor<2x8xi8>) -> tensor<2x8xi8>
  return %s : tensor<2x8xi8>
}
