// The printer options, for the output as for IR dumps (print-ir.mlir): generic form,
// locations, elided elements attributes.
// RUN: tessera-opt %s | filecheck %s --check-prefix=CUSTOM
// RUN: tessera-opt %s -mlir-print-op-generic | filecheck %s --check-prefix=GENERIC
// RUN: tessera-opt %s -mlir-print-debuginfo | filecheck %s --check-prefix=DEBUGINFO
// RUN: tessera-opt %s -mlir-elide-elementsattrs-if-larger=3 | filecheck %s --check-prefix=ELIDE
// RUN: tessera-opt %s -mlir-elide-elementsattrs-if-larger=4 | filecheck %s --check-prefix=CUSTOM
// RUN: not tessera-opt -mlir-elide-elementsattrs-if-larger=many < %s 2>&1 | filecheck %s --check-prefix=NOT-A-NUMBER
// RUN: not tessera-opt -emit-bytecode -mlir-print-op-generic < %s 2>&1 | filecheck %s --check-prefix=BYTECODE

// CUSTOM-LABEL: func.func @table() -> tensor<4xf32> {
// CUSTOM-NEXT: arith.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00]> : tensor<4xf32>
// CUSTOM-NOT: loc(
// GENERIC: "func.func"() <{function_type = () -> tensor<4xf32>, sym_name = "table"}> ({
// GENERIC-NEXT: %0 = "arith.constant"() <{value = dense<
// GENERIC: "func.return"(%0) : (tensor<4xf32>) -> ()
// DEBUGINFO: arith.constant dense<{{.*}}> : tensor<4xf32> loc([[LOC:#loc[0-9]*]])
// DEBUGINFO: [[LOC]] = loc("{{.*}}print-flags.mlir":23:8)
// ELIDE: arith.constant dense_resource<__elided__> : tensor<4xf32>
// NOT-A-NUMBER: tessera-opt: error: -mlir-elide-elementsattrs-if-larger=many: expected a number, found 'many'
// BYTECODE: tessera-opt: error: -mlir-print-op-generic: changes printed IR, and with --emit-bytecode none is printed
func.func @table() -> tensor<4xf32> {
  %0 = arith.constant dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>
  return %0 : tensor<4xf32>
}
