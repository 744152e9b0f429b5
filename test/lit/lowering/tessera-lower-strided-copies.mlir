// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-lower-strided-copies)' | filecheck %s

// A copy into a strided view becomes linalg.copy (no memrefCopy runtime call needed).
// CHECK-LABEL: func.func @strided_copy_becomes_linalg_copy
// CHECK-NOT: memref.copy
// CHECK: linalg.copy {{.*}}ins(%{{.*}} : memref<4x2xf32>) outs(%{{.*}} : memref<4x2xf32, strided<[4, 1], offset: 2>>)
func.func @strided_copy_becomes_linalg_copy(%src: memref<4x2xf32>, %dst: memref<4x4xf32>) {
  %view = memref.subview %dst[0, 2] [4, 2] [1, 1] : memref<4x4xf32> to memref<4x2xf32, strided<[4, 1], offset: 2>>
  memref.copy %src, %view : memref<4x2xf32> to memref<4x2xf32, strided<[4, 1], offset: 2>>
  return
}

// -----

// A copy between contiguous buffers stays a memcpy.
// CHECK-LABEL: func.func @contiguous_copy_stays
// CHECK: memref.copy
// CHECK-NOT: linalg.copy
func.func @contiguous_copy_stays(%src: memref<4x2xf32>, %dst: memref<4x2xf32>) {
  memref.copy %src, %dst : memref<4x2xf32> to memref<4x2xf32>
  return
}
