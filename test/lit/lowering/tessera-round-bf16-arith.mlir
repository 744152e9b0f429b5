// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-round-bf16-arith)' | filecheck %s

// Each bf16 op of a chain is computed in f32 and its result rounded to bf16 before the next
// op reads it (one rounding per op, as torch rounds each bf16 op).
// CHECK-LABEL: func.func @chain_rounds_each_result
// CHECK: %[[A:.*]] = arith.extf %arg0 : bf16 to f32
// CHECK: %[[B:.*]] = arith.extf %arg1 : bf16 to f32
// CHECK: %[[MUL:.*]] = arith.mulf %[[A]], %[[B]] : f32
// CHECK: %[[MUL16:.*]] = arith.truncf %[[MUL]] : f32 to bf16
// CHECK: %[[MULW:.*]] = arith.extf %[[MUL16]] : bf16 to f32
// CHECK: %[[A2:.*]] = arith.extf %arg0 : bf16 to f32
// CHECK: %[[ADD:.*]] = arith.addf %[[MULW]], %[[A2]] fastmath<contract> : f32
// CHECK: %[[ADD16:.*]] = arith.truncf %[[ADD]] : f32 to bf16
// CHECK: return %[[ADD16]] : bf16
func.func @chain_rounds_each_result(%a: bf16, %b: bf16) -> bf16 {
  %m = arith.mulf %a, %b : bf16
  %s = arith.addf %m, %a fastmath<contract> : bf16
  return %s : bf16
}

// -----

// Vectors too; a comparison reads widened operands and keeps its i1 result; math ops as
// arith ones.
// CHECK-LABEL: func.func @vectors_comparisons_math
// CHECK: %[[X:.*]] = arith.extf %arg0 : vector<8xbf16> to vector<8xf32>
// CHECK: %[[N:.*]] = arith.negf %[[X]] : vector<8xf32>
// CHECK: %[[N16:.*]] = arith.truncf %[[N]] : vector<8xf32> to vector<8xbf16>
// CHECK: arith.cmpf olt, %{{.*}}, %{{.*}} : f32
// CHECK-NOT: arith.truncf %{{.*}} : i1
// CHECK: %[[R:.*]] = math.rsqrt %{{.*}} : f32
// CHECK: arith.truncf %[[R]] : f32 to bf16
func.func @vectors_comparisons_math(%v: vector<8xbf16>, %a: bf16, %b: bf16) -> (vector<8xbf16>, i1, bf16) {
  %n = arith.negf %v : vector<8xbf16>
  %c = arith.cmpf olt, %a, %b : bf16
  %r = math.rsqrt %a : bf16
  return %n, %c, %r : vector<8xbf16>, i1, bf16
}

// -----

// f32 arithmetic and bf16 conversions are left alone.
// CHECK-LABEL: func.func @others_unchanged
// CHECK-NEXT: %[[S:.*]] = arith.addf %arg0, %arg0 : f32
// CHECK-NEXT: %[[T:.*]] = arith.truncf %[[S]] : f32 to bf16
// CHECK-NEXT: return %[[T]] : bf16
func.func @others_unchanged(%x: f32) -> bf16 {
  %s = arith.addf %x, %x : f32
  %t = arith.truncf %s : f32 to bf16
  return %t : bf16
}
