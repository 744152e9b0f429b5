// --emit-bytecode writes MLIR bytecode (its magic is "ML\xefR", its version the next byte, as a
// varint: 2v+1), and tessera-opt reads bytecode back from a file or stdin, as mlir-opt does.
// RUN: tessera-opt %s -emit-bytecode -o %t.mlirbc
// RUN: %python -c "import sys; head = open(sys.argv[1], 'rb').read(4); sys.exit(head != bytes([77, 76, 239, 82]))" %t.mlirbc
// RUN: tessera-opt %t.mlirbc | filecheck %s
// RUN: cat %t.mlirbc | tessera-opt - -cse | filecheck %s --check-prefix=MERGED
// RUN: tessera-opt %s -emit-bytecode -emit-bytecode-version=1 -o %t.v1.mlirbc
// RUN: %python -c "import sys; head = open(sys.argv[1], 'rb').read(5); sys.exit(head != bytes([77, 76, 239, 82, 3]))" %t.v1.mlirbc
// RUN: tessera-opt %t.v1.mlirbc | filecheck %s
// RUN: not tessera-opt -emit-bytecode -emit-bytecode-version=99 < %s 2>&1 | filecheck %s --check-prefix=VERSION
// RUN: not tessera-opt -emit-bytecode-version=1 < %s 2>&1 | filecheck %s --check-prefix=NO-BYTECODE
// RUN: %python -c "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read()[:40])" %t.mlirbc > %t.cut.mlirbc
// RUN: not tessera-opt %t.cut.mlirbc 2>&1 | filecheck %s --check-prefix=CUT

// CHECK-LABEL: func.func @identical_norms
// CHECK-COUNT-2: "tessera.norm.rms"
// MERGED-LABEL: func.func @identical_norms
// MERGED: "tessera.norm.rms"
// MERGED-NOT: "tessera.norm.rms"
// VERSION: tessera-opt: error: --emit-bytecode-version=99: unsupported version requested 99, must be in range [0, {{[0-9]+}}]
// NO-BYTECODE: tessera-opt: error: -emit-bytecode-version=1: needs --emit-bytecode
// CUT: cut.mlirbc:1:1: error: cannot read the bytecode:
func.func @identical_norms(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  %0 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %1 = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  %2 = arith.addf %0, %1 : tensor<2x8xf32>
  return %2 : tensor<2x8xf32>
}
