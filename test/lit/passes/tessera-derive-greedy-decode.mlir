// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-insert-kv-cache{block-size=4}, tessera-derive-greedy-decode)' 2>/dev/null | filecheck %s
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-insert-kv-cache{block-size=4}, tessera-derive-greedy-decode)' -o /dev/null
// RUN: echo 'module {}' | not tessera-opt - -p 'builtin.module(tessera-derive-greedy-decode)' 2>&1 | filecheck %s --check-prefix=NODECODE
// NODECODE: error: tessera-derive-greedy-decode: the module has no @decode (run tessera-insert-kv-cache first)

// @decode stays as it was (logits); @decode_greedy has its arguments and body but for the LM
// head, which becomes tessera.sample.greedy on the same hidden state and weight, softcap
// kept, returning the [B, 1] tokens as output "tokens".
// CHECK-LABEL: func.func @decode(
// CHECK-SAME: -> (tensor<?x?x32xf32> {tessera.output = "logits"})
// CHECK: "tessera.mma.proj"
// CHECK-NOT: tessera.sample.greedy
// CHECK: return
// CHECK-LABEL: func.func @decode_greedy(
// CHECK-SAME: tensor<?x1xi64> {tessera.dims = ["B", 1], tessera.input = "input_ids"}
// CHECK-SAME: tessera.state = "kv.0.v"
// CHECK-SAME: -> (tensor<?x?xi64> {tessera.output = "tokens"})
// CHECK: "tessera.attention.paged"
// CHECK-NOT: tessera.mma.proj
// CHECK: %[[T:.*]] = "tessera.sample.greedy"(%[[H:.*]], %{{.*}}) {softcap = 3.000000e+01 : f32} : (tensor<?x?x8xf32>, tensor<32x8xf32>) -> tensor<?x?xi64>
// CHECK-NEXT: return %[[T]] : tensor<?x?xi64>
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %h = "tessera.region"(%x) ({
  ^bb0(%in: tensor<?x?x8xf32>):
    %q = tensor.expand_shape %in [[0], [1, 2], [3]] output_shape [%B, 1, %S, 8] : tensor<?x?x8xf32> into tensor<?x1x?x8xf32>
    %o = "tessera.attention.flash"(%q, %q, %q) {causal = true, scale = 0.35 : f32} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
    %oc = tensor.collapse_shape %o [[0], [1, 2], [3]] : tensor<?x1x?x8xf32> into tensor<?x?x8xf32>
    "tessera.yield"(%oc) : (tensor<?x?x8xf32>) -> ()
  }) {label = "model.layers.0", layer = 0 : i64, kind = "global"} : (tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %logits = "tessera.mma.proj"(%h, %table) {transpose_w = true, softcap = 30.0 : f32} : (tensor<?x?x8xf32>, tensor<32x8xf32>) -> tensor<?x?x32xf32>
  return %logits : tensor<?x?x32xf32>
}

// -----

// A bf16 model's softcap is three ops after the head, each rounding to bf16 (tanh through
// f32): the greedy head takes it whole, as rounded_softcap, and the chain goes.
// CHECK-LABEL: func.func @decode_greedy(
// CHECK-NOT: arith.divf
// CHECK-NOT: math.tanh
// CHECK: %[[T:.*]] = "tessera.sample.greedy"(%{{.*}}, %{{.*}}) {rounded_softcap = true, softcap = 3.000000e+01 : f32} : (tensor<?x?x8xbf16>, tensor<32x8xbf16>) -> tensor<?x?xi64>
// CHECK-NEXT: return %[[T]] : tensor<?x?xi64>
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xbf16> {tessera.weight = "embed"}) -> tensor<?x?x32xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cap = arith.constant 3.0e1 : bf16
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xbf16>, tensor<?x?xi64>) -> tensor<?x?x8xbf16>
  %q = tensor.expand_shape %x [[0], [1, 2], [3]] output_shape [%B, 1, %S, 8] : tensor<?x?x8xbf16> into tensor<?x1x?x8xbf16>
  %o = "tessera.attention.flash"(%q, %q, %q) {causal = true, scale = 0.35 : f32} : (tensor<?x1x?x8xbf16>, tensor<?x1x?x8xbf16>, tensor<?x1x?x8xbf16>) -> tensor<?x1x?x8xbf16>
  %oc = tensor.collapse_shape %o [[0], [1, 2], [3]] : tensor<?x1x?x8xbf16> into tensor<?x?x8xbf16>
  %y = "tessera.mma.proj"(%oc, %table) {transpose_w = true} : (tensor<?x?x8xbf16>, tensor<32x8xbf16>) -> tensor<?x?x32xbf16>
  %e = tensor.empty(%B, %S) : tensor<?x?x32xbf16>
  %c = linalg.fill ins(%cap : bf16) outs(%e : tensor<?x?x32xbf16>) -> tensor<?x?x32xbf16>
  %d = arith.divf %y, %c : tensor<?x?x32xbf16>
  %d32 = arith.extf %d : tensor<?x?x32xbf16> to tensor<?x?x32xf32>
  %t32 = math.tanh %d32 : tensor<?x?x32xf32>
  %t = arith.truncf %t32 : tensor<?x?x32xf32> to tensor<?x?x32xbf16>
  %logits = arith.mulf %t, %c : tensor<?x?x32xbf16>
  return %logits : tensor<?x?x32xbf16>
}

// -----

// The LM head widens bf16 to f32 logits: the greedy head rounds the logits as its input, so
// it cannot stand in for this projection.
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xbf16> {tessera.weight = "embed"}) -> tensor<?x?x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xbf16>, tensor<?x?xi64>) -> tensor<?x?x8xbf16>
  %q = tensor.expand_shape %x [[0], [1, 2], [3]] output_shape [%B, 1, %S, 8] : tensor<?x?x8xbf16> into tensor<?x1x?x8xbf16>
  %o = "tessera.attention.flash"(%q, %q, %q) {causal = true, scale = 0.35 : f32} : (tensor<?x1x?x8xbf16>, tensor<?x1x?x8xbf16>, tensor<?x1x?x8xbf16>) -> tensor<?x1x?x8xbf16>
  %oc = tensor.collapse_shape %o [[0], [1, 2], [3]] : tensor<?x1x?x8xbf16> into tensor<?x?x8xbf16>
  // expected-error@+1 {{tessera-derive-greedy-decode: the LM head widens bf16 to f32 logits; the greedy head rounds them as its input}}
  %logits = "tessera.mma.proj"(%oc, %table) {transpose_w = true} : (tensor<?x?x8xbf16>, tensor<32x8xbf16>) -> tensor<?x?x32xf32>
  return %logits : tensor<?x?x32xf32>
}

// -----

// Logits that a projection does not return directly (a scale after the head).
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"}, %table: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x32xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %S = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %x = "tessera.tensor.lookup"(%table, %ids) {scale = 1.0 : f32} : (tensor<32x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  %q = tensor.expand_shape %x [[0], [1, 2], [3]] output_shape [%B, 1, %S, 8] : tensor<?x?x8xf32> into tensor<?x1x?x8xf32>
  %o = "tessera.attention.flash"(%q, %q, %q) {causal = true, scale = 0.35 : f32} : (tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>, tensor<?x1x?x8xf32>) -> tensor<?x1x?x8xf32>
  %oc = tensor.collapse_shape %o [[0], [1, 2], [3]] : tensor<?x1x?x8xf32> into tensor<?x?x8xf32>
  %logits = "tessera.mma.proj"(%oc, %table) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<32x8xf32>) -> tensor<?x?x32xf32>
  // expected-error@+1 {{tessera-derive-greedy-decode: the logits come from 'arith.addf', not from a tessera.mma.proj}}
  %twice = arith.addf %logits, %logits : tensor<?x?x32xf32>
  return %twice : tensor<?x?x32xf32>
}
