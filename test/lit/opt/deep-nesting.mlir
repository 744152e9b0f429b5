// The MLIR parser recurses once per bracket and overflows its stack (a segfault) a few
// thousand levels down; tessera-opt refuses IR nested deeper than 256 brackets, at the first
// bracket past the limit, and takes anything up to it.
// RUN: not tessera-opt %s --split-input-file 2>&1 | filecheck %s
// RUN: not tessera-opt %s --split-input-file 2>/dev/null | filecheck %s --check-prefix=OUT

// CHECK-NOT: Traceback
// OUT: func.func @two_hundred_levels_parse
// OUT-SAME: attributes {deep = {{(\[)+}}1]]]]]]]]]]
func.func @two_hundred_levels_parse() attributes {deep = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]} {
  return
}

// -----

// CHECK: deep-nesting.mlir:17:309: error: brackets nest deeper than 256 levels here; Tessera refuses such IR rather than let the parser overflow its stack
func.func @three_hundred_levels() attributes {deep = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]} {
  return
}

// -----

// 130 nested regions are 260 levels of '(' and '{'.
// CHECK: deep-nesting.mlir:153:18: error: brackets nest deeper than 256 levels here
func.func @nested_regions() {
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.nest"() ({
  "test.leaf"() : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  }) : () -> ()
  return
}

// -----

// An unclosed bracket counts as deep as a closed one.
// CHECK: deep-nesting.mlir:294:257: error: brackets nest deeper than 256 levels here
((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((

// -----

// OUT: func.func @later_chunks_still_run
func.func @later_chunks_still_run() {
  return
}
