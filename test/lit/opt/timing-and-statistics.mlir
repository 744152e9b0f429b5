// --mlir-timing and --mlir-pass-statistics, through the bindings' PassManager: one report per
// chunk, printed to stderr when the chunk's passes are done (as mlir-opt does per chunk).
// RUN: tessera-opt %s -cse -mlir-timing 2>&1 >/dev/null | filecheck %s --check-prefix=TIMING
// RUN: tessera-opt %s -split-input-file -cse -mlir-timing -mlir-timing-display=tree 2>&1 >/dev/null | filecheck %s --check-prefix=PER-CHUNK
// RUN: tessera-opt %s -cse -mlir-pass-statistics 2>&1 >/dev/null | filecheck %s --check-prefix=STATS
// RUN: tessera-opt %s -cse -mlir-pass-statistics -mlir-pass-statistics-display=list 2>&1 >/dev/null | filecheck %s --check-prefix=STATS-LIST
// RUN: tessera-opt %s -cse 2>&1 >/dev/null | filecheck %s --check-prefix=QUIET --allow-empty
// RUN: not tessera-opt -cse -mlir-timing -mlir-timing-display=list < %s 2>&1 | filecheck %s --check-prefix=LIST-VIEW
// RUN: not tessera-opt -cse -mlir-timing-display=tree < %s 2>&1 | filecheck %s --check-prefix=DISPLAY-ALONE
// RUN: not tessera-opt -cse -mlir-pass-statistics-display=list < %s 2>&1 | filecheck %s --check-prefix=STATS-DISPLAY-ALONE

// TIMING: ... Execution time report ...
// TIMING: Total Execution Time: {{[0-9.]+}} seconds
// TIMING: ----Wall Time----  ----Name----
// TIMING: {{[0-9.]+}} ({{ *[0-9.]+}}%)  CSE
// TIMING: {{[0-9.]+}} ({{ *[0-9.]+}}%)  tessera-cse
// TIMING: {{[0-9.]+}} (100.0%)  Total
// PER-CHUNK-COUNT-2: ... Execution time report ...
// PER-CHUNK-NOT: ... Execution time report ...
// STATS: ... Pass statistics report ...
// STATS: {{^}}CSE
// STATS-NEXT: (S) 0 num-cse'd - Number of operations CSE'd
// STATS: {{^}}tessera-cse
// STATS-LIST: ... Pass statistics report ...
// STATS-LIST: {{^}}  CSE
// STATS-LIST-NEXT: (S) 0 num-cse'd - Number of operations CSE'd
// STATS-LIST-NOT: tessera-cse
// QUIET-NOT: report
// LIST-VIEW: tessera-opt: error: -mlir-timing-display=list: the MLIR Python bindings' pass timing prints the tree view only
// DISPLAY-ALONE: tessera-opt: error: -mlir-timing-display=tree: only applies with --mlir-timing
// STATS-DISPLAY-ALONE: tessera-opt: error: -mlir-pass-statistics-display=list: only applies with --mlir-pass-statistics
func.func @first(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @second(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  return %x : tensor<2x8xf32>
}
