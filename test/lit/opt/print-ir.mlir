// mlir-opt's IR dumps, through the bindings' PassManager.enable_ir_printing. Upstream `cse`
// leaves the two identical tessera ops alone (MLIR cannot see that they are pure);
// `tessera-cse`, which tessera-opt runs after it, merges them.
// RUN: tessera-opt %s -cse -mlir-print-ir-before-all 2>&1 >/dev/null | filecheck %s --check-prefix=BEFORE
// RUN: tessera-opt %s -cse -mlir-print-ir-after-all 2>&1 >/dev/null | filecheck %s --check-prefix=AFTER
// RUN: tessera-opt %s -cse -mlir-print-ir-after-all -mlir-print-ir-after-change 2>&1 >/dev/null | filecheck %s --check-prefix=CHANGE
// RUN: not tessera-opt -cse -tessera-schedule-async-copies=stages=0 -mlir-print-ir-after-failure < %s 2>&1 >/dev/null | filecheck %s --check-prefix=FAILURE
// RUN: tessera-opt %s -p 'builtin.module(func.func(cse))' -mlir-print-ir-after-all 2>&1 >/dev/null | filecheck %s --check-prefix=LOCAL
// RUN: tessera-opt %s -p 'builtin.module(func.func(cse))' -mlir-print-ir-after-all -mlir-print-ir-module-scope -mlir-disable-threading 2>&1 >/dev/null | filecheck %s --check-prefix=MODULE
// RUN: tessera-opt %s -cse -mlir-print-ir-after-all -mlir-print-op-generic -mlir-print-debuginfo 2>&1 >/dev/null | filecheck %s --check-prefix=GENERIC
// RUN: rm -rf %t.tree
// RUN: tessera-opt %s -cse -mlir-print-ir-after-all -mlir-print-ir-tree-dir=%t.tree 2>&1 >/dev/null | filecheck %s --check-prefix=NO-DUMP --allow-empty
// RUN: filecheck %s --check-prefix=TREE --input-file %t.tree/builtin_module_no-symbol-name/1_tessera-cse.mlir

// Flags that would change nothing alone are refused (mlir-opt takes them and does nothing).
// RUN: not tessera-opt -mlir-print-ir-after-change < %s 2>&1 | filecheck %s --check-prefix=CHANGE-ALONE
// RUN: not tessera-opt -mlir-print-ir-after-all -mlir-print-ir-module-scope < %s 2>&1 | filecheck %s --check-prefix=SCOPE-THREADS
// RUN: not tessera-opt -mlir-print-ir-tree-dir=x < %s 2>&1 | filecheck %s --check-prefix=TREE-ALONE
// RUN: echo > %t.file
// RUN: not tessera-opt -cse -mlir-print-ir-after-all -mlir-print-ir-tree-dir=%t.file/dumps < %s 2>&1 | filecheck %s --check-prefix=TREE-BAD

// BEFORE: // -----// IR Dump Before CSE (cse) //----- //
// BEFORE-COUNT-2: "tessera.norm.rms"
// BEFORE: // -----// IR Dump Before tessera-cse (tessera-cse) //----- //
// BEFORE-COUNT-2: "tessera.norm.rms"
// BEFORE-NOT: IR Dump After
// AFTER-NOT: IR Dump Before
// AFTER: // -----// IR Dump After CSE (cse) //----- //
// AFTER-COUNT-2: "tessera.norm.rms"
// AFTER: // -----// IR Dump After tessera-cse (tessera-cse) //----- //
// AFTER: "tessera.norm.rms"
// AFTER-NOT: "tessera.norm.rms"
// CHANGE-NOT: IR Dump After CSE
// CHANGE: // -----// IR Dump After tessera-cse (tessera-cse) //----- //
// CHANGE-NOT: IR Dump
// FAILURE-NOT: IR Dump After CSE
// FAILURE: // -----// IR Dump After tessera-schedule-async-copies Failed (tessera-schedule-async-copies) //----- //
// FAILURE: error: tessera-schedule-async-copies: stages must be >= 1, got 0
// LOCAL: // -----// IR Dump After CSE (cse) //----- //
// LOCAL-NEXT: func.func @identical_norms
// MODULE: // -----// IR Dump After CSE (cse) ('func.func' operation: @identical_norms) //----- //
// MODULE-NEXT: module {
// MODULE-NEXT: func.func @identical_norms
// GENERIC: // -----// IR Dump After CSE (cse) //----- //
// GENERIC: "func.func"() <{function_type = {{.*}}, sym_name = "identical_norms"}>
// GENERIC: loc("{{.*}}print-ir.mlir":{{[0-9]+}}:{{[0-9]+}})
// NO-DUMP-NOT: IR Dump
// TREE: // -----// IR Dump After tessera-cse (tessera-cse) //----- //
// TREE: "tessera.norm.rms"
// TREE-NOT: "tessera.norm.rms"
// CHANGE-ALONE: tessera-opt: error: -mlir-print-ir-after-change: only filters the dumps of --mlir-print-ir-after-all or --mlir-print-ir-after-failure
// SCOPE-THREADS: tessera-opt: error: -mlir-print-ir-module-scope: needs --mlir-disable-threading
// TREE-ALONE: tessera-opt: error: -mlir-print-ir-tree-dir=x: only applies to IR dumps
// TREE-BAD: tessera-opt: error: --mlir-print-ir-tree-dir={{.*}}.file/dumps: cannot create the folder: Not a directory
func.func @identical_norms(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %1 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %2 = arith.addf %0, %1 : tensor<2x8xf32>
  return %2 : tensor<2x8xf32>
}
