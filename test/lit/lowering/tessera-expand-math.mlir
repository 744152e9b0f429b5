// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-expand-math)' | filecheck %s

// exp and tanh become calls to private polynomial functions; bf16 goes through f32.
// CHECK-LABEL: func.func @exp_and_tanh
// CHECK-NOT: math.exp
// CHECK: call @[[EXP:tessera_math_exp_f32]](%arg0) : (f32) -> f32
// CHECK: call @[[TANH:tessera_math_tanh_vector_8xbf16]](%arg1) : (vector<8xbf16>) -> vector<8xbf16>
// CHECK-DAG: func.func private @[[EXP]](%{{.*}}: f32) -> f32
// CHECK-DAG: func.func private @[[TANH]](%{{.*}}: vector<8xbf16>) -> vector<8xbf16>
// CHECK-DAG: arith.extf %{{.*}} : vector<8xbf16> to vector<8xf32>
func.func @exp_and_tanh(%x: f32, %v: vector<8xbf16>) -> (f32, vector<8xbf16>) {
  %e = math.exp %x : f32
  %t = math.tanh %v : vector<8xbf16>
  return %e, %t : f32, vector<8xbf16>
}

// -----

// Other math ops and f64 are left to the upstream lowering.
// CHECK-LABEL: func.func @others_stay
// CHECK: math.exp %{{.*}} : f64
// CHECK: math.sin %{{.*}} : f32
func.func @others_stay(%x: f64, %y: f32) -> (f64, f32) {
  %e = math.exp %x : f64
  %s = math.sin %y : f32
  return %e, %s : f64, f32
}
