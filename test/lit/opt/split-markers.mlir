// --split-input-file[=<marker>] splits at lines holding the marker (by default '// -----'), and
// --output-split-marker sets the line between the outputs, as in mlir-opt. Both chunks define
// @f: unsplit, the input is refused.
// RUN: tessera-opt %s '-split-input-file=// =====' '-output-split-marker=// #####' | filecheck %s
// RUN: tessera-opt %s '-split-input-file=// =====' | filecheck %s --check-prefix=DEFAULT-OUT
// RUN: not tessera-opt %s -split-input-file 2>&1 | filecheck %s --check-prefix=UNSPLIT
// RUN: not tessera-opt %s 2>&1 | filecheck %s --check-prefix=UNSPLIT
// RUN: not tessera-opt -output-split-marker=x < %s 2>&1 | filecheck %s --check-prefix=ALONE

// CHECK: func.func @f() -> i32
// CHECK: arith.constant 1 : i32
// CHECK: {{^}}// #####{{$}}
// CHECK-NEXT: module {
// CHECK: arith.constant 2 : i32
// DEFAULT-OUT: arith.constant 1 : i32
// DEFAULT-OUT: {{^}}// -----{{$}}
// DEFAULT-OUT: arith.constant 2 : i32
// UNSPLIT: split-markers.mlir:{{[0-9]+}}:{{[0-9]+}}: error: redefinition of symbol named 'f'
// ALONE: tessera-opt: error: -output-split-marker=x: only applies with --split-input-file
func.func @f() -> i32 {
  %0 = arith.constant 1 : i32
  return %0 : i32
}

// =====

func.func @f() -> i32 {
  %0 = arith.constant 2 : i32
  return %0 : i32
}
