// IR that tessera-shard-tensor-parallel refuses for two ranks, each refusal at the op that
// stops it and naming the size that the ranks do not divide.
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-shard-tensor-parallel{ranks=2 rank=0})' -o /dev/null
// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-shard-tensor-parallel{ranks=2 rank=2})' 2>&1 | filecheck %s --check-prefix=OPTIONS
// OPTIONS: tessera-shard-tensor-parallel: needs ranks >= 1 and 0 <= rank < ranks, found ranks=2 rank=2

func.func @query_heads(%q: tensor<1x3x8x4xf32>, %k: tensor<1x1x8x4xf32>) -> tensor<1x3x8x4xf32> {
  // expected-error@+1 {{the query heads (3) are not divisible by ranks=2}}
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.5 : f32} : (tensor<1x3x8x4xf32>, tensor<1x1x8x4xf32>, tensor<1x1x8x4xf32>) -> tensor<1x3x8x4xf32>
  return %0 : tensor<1x3x8x4xf32>
}

// -----

func.func @kv_heads(%q: tensor<1x6x8x4xf32>, %k: tensor<1x3x8x4xf32>) -> tensor<1x6x8x4xf32> {
  // expected-error@+1 {{the kv heads (3) and ranks=2 do not divide one another}}
  %0 = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.5 : f32} : (tensor<1x6x8x4xf32>, tensor<1x3x8x4xf32>, tensor<1x3x8x4xf32>) -> tensor<1x6x8x4xf32>
  return %0 : tensor<1x6x8x4xf32>
}

// -----

func.func @mlp(%x: tensor<?x8xf32>, %gate: tensor<5x8xf32> {tessera.weight = "gate"},
               %up: tensor<5x8xf32> {tessera.weight = "up"},
               %down: tensor<8x5xf32> {tessera.weight = "down"}) -> tensor<?x8xf32> {
  // expected-error@+1 {{the MLP's intermediate size (5) is not divisible by ranks=2}}
  %0 = "tessera.mlp.swi_glu"(%x, %gate, %up, %down) {activation = "gelu_tanh"} : (tensor<?x8xf32>, tensor<5x8xf32>, tensor<5x8xf32>, tensor<8x5xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

func.func @vocabulary(%ids: tensor<?x?xi64> {tessera.input = "input_ids"},
                      %embed: tensor<15x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x8xf32> {
  // expected-error@+1 {{the vocabulary (15 rows of 'embed') is not divisible by ranks=2}}
  %0 = "tessera.tensor.lookup"(%embed, %ids) : (tensor<15x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  return %0 : tensor<?x?x8xf32>
}

// -----

// The query projection's result also feeds an add, which would read half of it as the whole.
func.func @foreign_user(%x: tensor<?x?x8xf32>, %wq: tensor<8x8xf32> {tessera.weight = "q"},
                        %k: tensor<?x1x?x4xf32>) -> (tensor<?x2x?x4xf32>, tensor<?x?x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x8xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x8xf32>
  %q = "tessera.mma.proj"(%x, %wq) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  // expected-error@+1 {{cannot shard through 'arith.addf': its operand #0 holds a slice of axis 2 over the ranks (it comes from attention's q projection)}}
  %twice = arith.addf %q, %x : tensor<?x?x8xf32>
  %q4 = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [%B, %S, 2, 4] : tensor<?x?x8xf32> into tensor<?x?x2x4xf32>
  %e = tensor.empty(%B, %S) : tensor<?x2x?x4xf32>
  %qt = linalg.transpose ins(%q4 : tensor<?x?x2x4xf32>) outs(%e : tensor<?x2x?x4xf32>) permutation = [0, 2, 1, 3]
  %a = "tessera.attention.flash"(%qt, %k, %k) {causal = true, scale = 0.5 : f32} : (tensor<?x2x?x4xf32>, tensor<?x1x?x4xf32>, tensor<?x1x?x4xf32>) -> tensor<?x2x?x4xf32>
  return %a, %twice : tensor<?x2x?x4xf32>, tensor<?x?x8xf32>
}

// -----

func.func @q_is_an_argument(%q: tensor<?x2x?x4xf32>, %k: tensor<?x1x?x4xf32>) -> tensor<?x2x?x4xf32> {
  // expected-error@+1 {{attention's q is a block argument, not a projection's result}}
  %a = "tessera.attention.flash"(%q, %k, %k) {causal = true, scale = 0.5 : f32} : (tensor<?x2x?x4xf32>, tensor<?x1x?x4xf32>, tensor<?x1x?x4xf32>) -> tensor<?x2x?x4xf32>
  return %a : tensor<?x2x?x4xf32>
}

// -----

// A bias after a row-parallel contraction would be added once per rank.
func.func @row_parallel_bias(%x: tensor<?x?x8xf32>, %wq: tensor<8x8xf32> {tessera.weight = "q"},
                             %k: tensor<?x1x?x4xf32>, %wo: tensor<8x8xf32> {tessera.weight = "o"},
                             %bias: tensor<8xf32> {tessera.weight = "o.bias"}) -> tensor<?x8xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x8xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x8xf32>
  %q = "tessera.mma.proj"(%x, %wq) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  %q4 = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [%B, %S, 2, 4] : tensor<?x?x8xf32> into tensor<?x?x2x4xf32>
  %e = tensor.empty(%B, %S) : tensor<?x2x?x4xf32>
  %qt = linalg.transpose ins(%q4 : tensor<?x?x2x4xf32>) outs(%e : tensor<?x2x?x4xf32>) permutation = [0, 2, 1, 3]
  %a = "tessera.attention.flash"(%qt, %k, %k) {causal = true, scale = 0.5 : f32} : (tensor<?x2x?x4xf32>, tensor<?x1x?x4xf32>, tensor<?x1x?x4xf32>) -> tensor<?x2x?x4xf32>
  %ae = tensor.empty(%B, %S) : tensor<?x?x2x4xf32>
  %at = linalg.transpose ins(%a : tensor<?x2x?x4xf32>) outs(%ae : tensor<?x?x2x4xf32>) permutation = [0, 2, 1, 3]
  %ac = tensor.collapse_shape %at [[0, 1], [2, 3]] : tensor<?x?x2x4xf32> into tensor<?x8xf32>
  // expected-error@+1 {{a row-parallel projection with a bias is not supported}}
  %o = "tessera.mma.proj"(%ac, %wo, %bias) {transpose_w = true} : (tensor<?x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  return %o : tensor<?x8xf32>
}

// -----

// The embedding table is sliced for the lookup but read whole by a projection whose result
// is not the logits.
func.func @table_read_whole(%ids: tensor<?x?xi64> {tessera.input = "input_ids"},
                            %embed: tensor<16x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x16xf32> {
  %x = "tessera.tensor.lookup"(%embed, %ids) : (tensor<16x8xf32>, tensor<?x?xi64>) -> tensor<?x?x8xf32>
  // expected-error@+1 {{weight 'embed' is sharded for 'tessera.tensor.lookup' but also used whole by 'tessera.mma.proj'}}
  %p = "tessera.mma.proj"(%x, %embed) {transpose_w = true} : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %y = arith.addf %p, %p : tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}
