// linalg.broadcast, linalg.reduce and linalg.transpose read `dimensions` / `permutation` with a
// parser that aborts the process ("attributes may never be null") on anything but a list of
// 64-bit integers. tessera-opt checks such lists before parsing and reports the bad token.
// RUN: tessera-opt %s --split-input-file --verify-diagnostics

func.func @float_in_broadcast(%x: tensor<8xf32>, %o: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{'dimensions' takes a list of 64-bit integers such as [0, 1]: expected a 64-bit integer, found '0.5'}}
  %0 = linalg.broadcast ins(%x : tensor<8xf32>) outs(%o : tensor<2x8xf32>) dimensions = [0.5]
  return %0 : tensor<2x8xf32>
}

// -----

func.func @beyond_64_bits_in_transpose(%x: tensor<8x2xf32>, %o: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{expected a 64-bit integer, found '9223372036854775808'}}
  %0 = linalg.transpose ins(%x : tensor<8x2xf32>) outs(%o : tensor<2x8xf32>) permutation = [9223372036854775808, 0]
  return %0 : tensor<2x8xf32>
}

// -----

func.func @no_brackets_in_reduce(%x: tensor<8x2xf32>, %o: tensor<8xf32>) -> tensor<8xf32> {
  // expected-error@+1 {{'dimensions' takes a list of 64-bit integers such as [0, 1]: expected '[', found '1'}}
  %0 = linalg.reduce ins(%x : tensor<8x2xf32>) outs(%o : tensor<8xf32>) dimensions = 1
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  return %0 : tensor<8xf32>
}

// -----

func.func @trailing_comma(%x: tensor<8xf32>, %o: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{expected a 64-bit integer, found ']'}}
  %0 = linalg.broadcast ins(%x : tensor<8xf32>) outs(%o : tensor<2x8xf32>) dimensions = [0,]
  return %0 : tensor<2x8xf32>
}

// -----

// Without ins/outs the keyword follows the op name; the parser would abort all the same.
func.func @right_after_the_op_name() {
  // expected-error@+1 {{expected a 64-bit integer, found 'x'}}
  %0 = linalg.transpose permutation = [x]
  return
}

// -----

// What the parser does take passes through to its own diagnostics: here the verifier's, on
// a list of integers with -0x8000000000000000 (the most negative i64), `true` and a comment.
func.func @integers_are_the_verifier_s_business(%x: tensor<8xf32>, %o: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{'linalg.broadcast' op dimension 0 is out of range}}
  %0 = linalg.broadcast ins(%x : tensor<8xf32>) outs(%o : tensor<2x8xf32>) dimensions = [- 0x8000000000000000 // c
  ]
  return %0 : tensor<2x8xf32>
}

// -----

// In properties or an attribute dictionary (generic syntax) the ordinary attribute parser
// reads the value: no crash, and a diagnostic at the op.
func.func @generic_syntax(%x: tensor<8xf32>, %o: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{Invalid attribute `dimensions` in property conversion}}
  %0 = "linalg.broadcast"(%x, %o) <{dimensions = 0.5 : f32}> ({
  ^bb0(%in: f32, %init: f32):
    linalg.yield %in : f32
  }) : (tensor<8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}
