// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-lower-dynamic-expand-shapes)' | filecheck %s

// [B*S, N] -> [B, S, N] with B and S dynamic becomes a reinterpret_cast with explicit sizes
// and strides.
// CHECK-LABEL: func.func @two_dynamic_dims_in_one_group
// CHECK-NOT: memref.expand_shape
// CHECK: %[[META:.*]], %{{.*}}, %{{.*}}:2, %[[STRIDES:.*]]:2 = memref.extract_strided_metadata %arg0
// CHECK: %[[BSTRIDE:.*]] = arith.muli %[[STRIDES]]#0, %arg2 : index
// CHECK: memref.reinterpret_cast %[[META]] to offset: [0], sizes: [%arg1, %arg2, 8], strides: [%[[BSTRIDE]], 8, 1]
func.func @two_dynamic_dims_in_one_group(%x: memref<?x8xf32>, %b: index, %s: index) -> memref<?x?x8xf32> {
  %y = memref.expand_shape %x [[0, 1], [2]] output_shape [%b, %s, 8] : memref<?x8xf32> into memref<?x?x8xf32>
  return %y : memref<?x?x8xf32>
}

// -----

// One dynamic dim per group is left to expand-strided-metadata.
// CHECK-LABEL: func.func @one_dynamic_dim_stays
// CHECK: memref.expand_shape
func.func @one_dynamic_dim_stays(%x: memref<?x8xf32>, %s: index) -> memref<?x2x8xf32> {
  %y = memref.expand_shape %x [[0, 1], [2]] output_shape [%s, 2, 8] : memref<?x8xf32> into memref<?x2x8xf32>
  return %y : memref<?x2x8xf32>
}
