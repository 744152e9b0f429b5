// The last chunks hold IR the pass cannot plan: the first RUN line expects tessera-opt to fail
// on them (`not`) and checks the plans of the others; the second checks the diagnostics, and
// that no other chunk reports one.
// RUN: not tessera-opt %s --split-input-file -p 'builtin.module(tessera-plan-memory)' 2>/dev/null | filecheck %s
// RUN: tessera-opt %s --split-input-file --verify-diagnostics -p 'builtin.module(tessera-plan-memory)' -o /dev/null

// A dead value's slice is reused by a later value it provably holds (512*B*S >= 256*B*S for
// all B, S >= 1); the slice's tail stays free. A value read by an op never shares bytes with
// the op's result. The returned value goes to the output buffer, named "logits" when alone.
// CHECK-LABEL: func.func @reuse_a_dead_slice
// CHECK-SAME: tessera.arena_bytes = "768*B*S"
// CHECK: %[[A:.*]] = "tessera.mma.proj"(%arg0, %arg1) {tessera.buffers = [{bytes = "512*B*S", kind = "arena", offset = "0"}]
// CHECK: %[[B:.*]] = "tessera.mma.proj"(%[[A]], %arg2) {tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "512*B*S"}]
// CHECK: %[[C:.*]] = "tessera.mma.proj"(%[[B]], %arg3) {tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "0"}]
// CHECK: "tessera.mma.proj"(%[[C]], %arg4) {tessera.buffers = [{kind = "output", name = "logits"}]
func.func @reuse_a_dead_slice(%x: tensor<?x?x64xf32> {tessera.input = "x"}, %w1: tensor<128x64xf32> {tessera.weight = "w1"}, %w2: tensor<64x128xf32> {tessera.weight = "w2"}, %w3: tensor<64x64xf32> {tessera.weight = "w3"}, %w4: tensor<160x64xf32> {tessera.weight = "w4"}) -> tensor<?x?x160xf32> attributes {tessera.dims = {x = ["B", "S", 64]}} {
  %a = "tessera.mma.proj"(%x, %w1) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<128x64xf32>) -> tensor<?x?x128xf32>
  %b = "tessera.mma.proj"(%a, %w2) {transpose_w = true} : (tensor<?x?x128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  %c = "tessera.mma.proj"(%b, %w3) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  %d = "tessera.mma.proj"(%c, %w4) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<160x64xf32>) -> tensor<?x?x160xf32>
  return %d : tensor<?x?x160xf32>
}

// -----

// Negative: a freed slice of 256*S bytes may be smaller than 256*B*S (B > 1), so the larger
// value takes fresh space at the end instead.
// CHECK-LABEL: func.func @no_reuse_when_the_freed_slice_may_be_smaller
// CHECK-SAME: tessera.arena_bytes = "512*B*S + 512*S"
// CHECK: %[[T:.*]] = "tessera.mma.proj"(%arg1, %arg2) {tessera.buffers = [{bytes = "256*S", kind = "arena", offset = "0"}]
// CHECK: %[[U:.*]] = "tessera.mma.proj"(%[[T]], %arg2) {tessera.buffers = [{bytes = "256*S", kind = "arena", offset = "256*S"}]
// CHECK: "tessera.mma.proj"(%arg0, %arg2) {tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "512*S"}]
// CHECK: linalg.broadcast ins(%[[U]] : tensor<?x64xf32>) {{.*}} {tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "256*B*S + 512*S"}]}
func.func @no_reuse_when_the_freed_slice_may_be_smaller(%x: tensor<?x?x64xf32> {tessera.input = "x"}, %p: tensor<?x64xf32> {tessera.input = "p"}, %w: tensor<64x64xf32> {tessera.weight = "w"}) -> tensor<?x?x64xf32> attributes {tessera.dims = {x = ["B", "S", 64], p = ["S", 64]}} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %t = "tessera.mma.proj"(%p, %w) {transpose_w = true} : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %u = "tessera.mma.proj"(%t, %w) {transpose_w = true} : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %big = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  %B = tensor.dim %x, %c0 : tensor<?x?x64xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xf32>
  %e = tensor.empty(%B, %S) : tensor<?x?x64xf32>
  %r = linalg.broadcast ins(%u : tensor<?x64xf32>) outs(%e : tensor<?x?x64xf32>) dimensions = [0]
  %o = arith.addf %big, %r : tensor<?x?x64xf32>
  return %o : tensor<?x?x64xf32>
}

// -----

// In place: an elementwise op, rms norm or an identity linalg.generic writes over an operand
// that dies at it and has its size and element type. Not over an argument (%x), a value
// still used later (%a at %s), or one of another element type (extf).
// CHECK-LABEL: func.func @in_place_where_legal
// CHECK-SAME: tessera.arena_bytes = "1024*N"
// CHECK: %[[A:.*]] = "tessera.mma.proj"{{.*}}tessera.buffers = [{bytes = "256*N", kind = "arena", offset = "0"}]
// CHECK: %[[S:.*]] = arith.addf %[[A]], %arg0 {tessera.buffers = [{bytes = "256*N", kind = "arena", offset = "256*N"}]}
// CHECK: %[[T:.*]] = arith.mulf %[[S]], %[[A]] {tessera.buffers = [{kind = "inplace", of = 0 : i64}]}
// CHECK: %[[N:.*]] = "tessera.norm.rms"(%[[T]], %arg2) {{{.*}}tessera.buffers = [{kind = "inplace", of = 0 : i64}]}
// CHECK: %[[X:.*]] = arith.addf %arg0, %[[N]] {tessera.buffers = [{kind = "inplace", of = 1 : i64}]}
// CHECK: %[[G:.*]] = linalg.generic {{.*}} ins(%[[X]] : tensor<?x64xf32>) outs(%{{.*}} : tensor<?x64xf32>) attrs = {tessera.buffers = [{kind = "inplace", of = 0 : i64}]}
// CHECK: %[[W:.*]] = arith.extf %[[G]] {tessera.buffers = [{bytes = "512*N", kind = "arena", offset = "512*N"}]}
// CHECK: %[[M:.*]] = math.tanh %[[W]] {tessera.buffers = [{kind = "inplace", of = 0 : i64}]}
// CHECK: arith.truncf %[[M]] {tessera.buffers = [{kind = "output", name = "logits"}]}
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @in_place_where_legal(%x: tensor<?x64xf32> {tessera.input = "x"}, %w: tensor<64x64xf32> {tessera.weight = "w"}, %g: tensor<64xf32> {tessera.weight = "g"}) -> tensor<?x64xf32> attributes {tessera.dims = {x = ["N", 64]}} {
  %c0 = arith.constant 0 : index
  %a = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %s = arith.addf %a, %x : tensor<?x64xf32>
  %t = arith.mulf %s, %a : tensor<?x64xf32>
  %n = "tessera.norm.rms"(%t, %g) {eps = 1.0e-06 : f32} : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %y = arith.addf %x, %n : tensor<?x64xf32>
  %N = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%N) : tensor<?x64xf32>
  %q = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]} ins(%y : tensor<?x64xf32>) outs(%e : tensor<?x64xf32>) {
  ^bb0(%in: f32, %out: f32):
    %sq = arith.mulf %in, %in : f32
    linalg.yield %sq : f32
  } -> tensor<?x64xf32>
  %wide = arith.extf %q : tensor<?x64xf32> to tensor<?x64xf64>
  %th = math.tanh %wide : tensor<?x64xf64>
  %o = arith.truncf %th : tensor<?x64xf64> to tensor<?x64xf32>
  return %o : tensor<?x64xf32>
}

// -----

// Reshapes alias their source and keep it alive until their own last use: %b cannot take
// %a's bytes while %va (a view of %a) is still to be read. A returned view makes its source
// the output. tensor.empty gets no storage; a dense constant is uploaded.
// CHECK-LABEL: func.func @views_keep_their_source_alive
// CHECK-SAME: tessera.arena_bytes = "512*B*S"
// CHECK: arith.constant {tessera.buffers = [{kind = "constant"}]} dense<1.000000e+00> : tensor<64xf32>
// CHECK: %[[A:.*]] = "tessera.mma.proj"{{.*}}tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "0"}]
// CHECK: %[[VA:.*]] = tensor.collapse_shape %[[A]] {{.*}} {tessera.buffers = [{kind = "view", of = 0 : i64}]}
// CHECK: %[[B:.*]] = "tessera.mma.proj"{{.*}}tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "256*B*S"}]
// CHECK: %[[VB:.*]] = tensor.collapse_shape %[[B]] {{.*}} {tessera.buffers = [{kind = "view", of = 0 : i64}]}
// CHECK: %[[S:.*]] = arith.addf %[[VA]], %[[VB]] {tessera.buffers = [{kind = "inplace", of = 0 : i64}]}
// CHECK-NOT: tensor.empty{{.*}}tessera.buffers
// CHECK: linalg.broadcast {{.*}} {tessera.buffers = [{bytes = "256*B*S", kind = "arena", offset = "256*B*S"}]}
// CHECK: %[[E:.*]] = tensor.expand_shape {{.*}} {tessera.buffers = [{kind = "view", of = 0 : i64}]}
// CHECK: %[[O:.*]] = "tessera.mma.proj"(%[[E]], %arg2) {tessera.buffers = [{kind = "output", name = "logits"}]
// CHECK: tensor.collapse_shape %[[O]] {{.*}} {tessera.buffers = [{kind = "view", of = 0 : i64}]}
func.func @views_keep_their_source_alive(%x: tensor<?x?x64xf32> {tessera.input = "x"}, %w: tensor<64x64xf32> {tessera.weight = "w"}, %w2: tensor<32x64xf32> {tessera.weight = "w2"}) -> tensor<?x32xf32> attributes {tessera.dims = {x = ["B", "S", 64]}} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %ones = arith.constant dense<1.0> : tensor<64xf32>
  %B = tensor.dim %x, %c0 : tensor<?x?x64xf32>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xf32>
  %a = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  %va = tensor.collapse_shape %a [[0, 1], [2]] : tensor<?x?x64xf32> into tensor<?x64xf32>
  %b = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  %vb = tensor.collapse_shape %b [[0, 1], [2]] : tensor<?x?x64xf32> into tensor<?x64xf32>
  %s = arith.addf %va, %vb : tensor<?x64xf32>
  %n = arith.muli %B, %S : index
  %e = tensor.empty(%n) : tensor<?x64xf32>
  %ob = linalg.broadcast ins(%ones : tensor<64xf32>) outs(%e : tensor<?x64xf32>) dimensions = [0]
  %m = arith.mulf %s, %ob : tensor<?x64xf32>
  %em = tensor.expand_shape %m [[0, 1], [2]] output_shape [%B, %S, 64] : tensor<?x64xf32> into tensor<?x?x64xf32>
  %o = "tessera.mma.proj"(%em, %w2) {transpose_w = true} : (tensor<?x?x64xf32>, tensor<32x64xf32>) -> tensor<?x?x32xf32>
  %oc = tensor.collapse_shape %o [[0, 1], [2]] : tensor<?x?x32xf32> into tensor<?x32xf32>
  return %oc : tensor<?x32xf32>
}

// -----

// Outputs take their names from the results' tessera.output attributes, else out<i>. A
// returned value is never written in place (it lives in its output buffer): the arena is empty.
// CHECK-LABEL: func.func @named_outputs
// CHECK-SAME: tessera.arena_bytes = "0"
// CHECK: "tessera.mma.proj"{{.*}}tessera.buffers = [{kind = "output", name = "hidden"}]
// CHECK: arith.addf {{.*}} {tessera.buffers = [{kind = "output", name = "out1"}]}
func.func @named_outputs(%x: tensor<?x64xf32> {tessera.input = "x"}, %w: tensor<64x64xf32> {tessera.weight = "w"}) -> (tensor<?x64xf32> {tessera.output = "hidden"}, tensor<?x64xf32>) attributes {tessera.dims = {x = ["N", 64]}} {
  %h = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %d = arith.addf %h, %h : tensor<?x64xf32>
  return %h, %d : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Without tessera.dims a dynamic dim is named after its argument and axis. bf16 sizes that are
// not multiples of 256 get aligned slices (cdiv), so offsets stay multiples of 256, and a
// dead aligned slice is reused.
// CHECK-LABEL: func.func @default_symbols_and_alignment
// CHECK-SAME: tessera.arena_bytes = "512*cdiv(3*x_0, 8)"
// CHECK: "tessera.mma.proj"{{.*}}tessera.buffers = [{bytes = "96*x_0", kind = "arena", offset = "0"}]
// CHECK: "tessera.mma.proj"{{.*}}tessera.buffers = [{bytes = "96*x_0", kind = "arena", offset = "256*cdiv(3*x_0, 8)"}]
// CHECK: "tessera.mma.proj"{{.*}}tessera.buffers = [{bytes = "96*x_0", kind = "arena", offset = "0"}]
// CHECK: "tessera.mma.proj"{{.*}}tessera.buffers = [{kind = "output", name = "logits"}]
func.func @default_symbols_and_alignment(%x: tensor<?x64xbf16> {tessera.input = "x"}, %w: tensor<48x64xbf16> {tessera.weight = "w"}, %w2: tensor<48x48xbf16> {tessera.weight = "w2"}) -> tensor<?x48xbf16> {
  %a = "tessera.mma.proj"(%x, %w) {transpose_w = true} : (tensor<?x64xbf16>, tensor<48x64xbf16>) -> tensor<?x48xbf16>
  %b = "tessera.mma.proj"(%a, %w2) {transpose_w = true} : (tensor<?x48xbf16>, tensor<48x48xbf16>) -> tensor<?x48xbf16>
  %c = "tessera.mma.proj"(%b, %w2) {transpose_w = true} : (tensor<?x48xbf16>, tensor<48x48xbf16>) -> tensor<?x48xbf16>
  %d = "tessera.mma.proj"(%c, %w2) {transpose_w = true} : (tensor<?x48xbf16>, tensor<48x48xbf16>) -> tensor<?x48xbf16>
  return %d : tensor<?x48xbf16>
}

// -----

// Diagnostics.
func.func @regions_not_inlined(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{tessera-plan-memory needs the regions inlined first}}
  %r = "tessera.region"(%x) ({
  ^bb0(%a: tensor<2x8xf32>):
    %s = arith.addf %a, %a : tensor<2x8xf32>
    "tessera.yield"(%s) : (tensor<2x8xf32>) -> ()
  }) {label = "model.layers.0"} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %r : tensor<2x8xf32>
}

// -----

func.func @unknown_dims(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error@+1 {{cannot express the dims of %0 (tensor<?x8xf32>): no shape rule for 'test.opaque'}}
  %y = "test.opaque"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @returns_an_input(%x: tensor<?x8xf32> {tessera.input = "x"}) -> tensor<?x8xf32> {
  // expected-error@+1 {{output 'logits' is %arg0, a function argument; outputs must be tensors the function computes, each returned once}}
  return %x : tensor<?x8xf32>
}

// -----

// expected-error@+1 {{tessera.dims of argument #0 ('x') has 1 dims; tensor<?x8xf32> has rank 2}}
func.func @dims_of_the_wrong_rank(%x: tensor<?x8xf32> {tessera.input = "x"}) -> tensor<?x8xf32> attributes {tessera.dims = {x = ["N"]}} {
  %y = arith.addf %x, %x : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @empty_read_as_data(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x8xf32>
  %e = tensor.empty(%n) : tensor<?x8xf32>
  // expected-error@+1 {{'arith.addf' reads %0, a tensor.empty, whose contents are undefined; only linalg outs and shape queries may use it}}
  %y = arith.addf %x, %e : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

// expected-error@+1 {{tessera.dims of argument #0 ('x') must be an array of symbol names or integers, found array<f32: 1.000000e+00>}}
func.func @dims_that_are_not_names(%x: tensor<?x8xf32> {tessera.input = "x"}) -> tensor<?x8xf32> attributes {tessera.dims = {x = array<f32: 1.0>}} {
  %y = arith.addf %x, %x : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}
