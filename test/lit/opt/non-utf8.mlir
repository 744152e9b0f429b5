// MLIR text is UTF-8: a byte that is not is reported where it stands (line and byte column),
// not as an internal error.
// RUN: printf 'func.func @f() {\n  return // caf\303\251 \377\n}\n' > %t.mlir
// RUN: not tessera-opt %t.mlir 2>&1 | filecheck %s
// RUN: printf 'func.func @f() {\n  return\n}\n\303' | not tessera-opt - 2>&1 | filecheck %s --check-prefix=STDIN

// CHECK: non-utf8.mlir.tmp.mlir:2:19: error: the input is not UTF-8 text: invalid start byte (byte 0xff)
// CHECK-NOT: internal error
// STDIN: <stdin>:4:1: error: the input is not UTF-8 text: unexpected end of data (byte 0xc3)
