// RUN: tessera-opt %s -p 'builtin.module(tessera-lower-to-cpu)' | filecheck %s

// Each collective becomes a call of a wrapper that allocates the result and calls a core; the
// core loads the callback's address from the communicator, stops the process if it is null,
// and calls it with the kind (0 all_reduce, 1 all_gather), the dtype code (1: bf16), the
// input and result addresses and the input's extent before and from the axis (for the
// all-reduce, the last: any split of the elements does), then stops the process on a
// nonzero status.
// CHECK-LABEL: func.func @forward(
// CHECK: %[[R:.*]] = call @tessera_all_reduce_dxdx8_bf16_a2_n2_wrap(%arg0, %arg1)
// CHECK: call @tessera_all_gather_dxdx8_bf16_a2_n2_wrap(%[[R]], %arg1) : (tensor<?x?x8xbf16>, tensor<1xi64>) -> tensor<?x?x16xbf16>

// CHECK-LABEL: func.func private @tessera_all_reduce_dxdx8_bf16_a2_n2_core(
// CHECK-SAME: %[[X:[a-z0-9]+]]: memref<?x?x8xbf16>, %[[C:[a-z0-9]+]]: memref<1xi64>, %[[Y:[a-z0-9]+]]: memref<?x?x8xbf16>)
// CHECK-DAG: %[[KIND:.*]] = arith.constant 0 : i64
// CHECK-DAG: %[[BF16:.*]] = arith.constant 1 : i64
// CHECK-DAG: %[[EIGHT:.*]] = arith.constant 8 : index
// CHECK: %[[H:.*]] = memref.load %[[C]][%{{.*}}] : memref<1xi64>
// CHECK: %[[SET:.*]] = arith.cmpi ne, %[[H]], %[[KIND]] : i64
// CHECK: cf.assert %[[SET]], "tessera: a collective ran without a communicator (bind the weight 'tessera.communicator' with tessera.runtime.collectives)"
// CHECK: %[[F:.*]] = llvm.inttoptr %[[H]] : i64 to !llvm.ptr
// CHECK: %[[B:.*]] = memref.dim %[[X]], %{{.*}} : memref<?x?x8xbf16>
// CHECK: %[[S:.*]] = memref.dim %[[X]], %{{.*}} : memref<?x?x8xbf16>
// CHECK: %[[BS:.*]] = arith.muli %[[B]], %[[S]] : index
// CHECK: %[[OUTER:.*]] = arith.index_cast %[[BS]] : index to i64
// CHECK: %[[INNER:.*]] = arith.index_cast %[[EIGHT]] : index to i64
// CHECK: memref.extract_aligned_pointer_as_index %[[X]]
// CHECK: %[[XP:.*]] = llvm.inttoptr
// CHECK: memref.extract_aligned_pointer_as_index %[[Y]]
// CHECK: %[[YP:.*]] = llvm.inttoptr
// CHECK: %[[STATUS:.*]] = llvm.call %[[F]](%[[KIND]], %[[BF16]], %[[XP]], %[[YP]], %[[OUTER]], %[[INNER]]) : !llvm.ptr, (i64, i64, !llvm.ptr, !llvm.ptr, i64, i64) -> i32
// CHECK: %[[OK:.*]] = arith.cmpi eq, %[[STATUS]], %{{.*}} : i32
// CHECK: cf.assert %[[OK]], "tessera: a collective failed (see the error above)"

// CHECK-LABEL: func.func private @tessera_all_reduce_dxdx8_bf16_a2_n2_wrap(
// CHECK: memref.alloc(%{{.*}}, %{{.*}}) : memref<?x?x8xbf16>
// CHECK: call @tessera_all_reduce_dxdx8_bf16_a2_n2_core({{.*}}) {no_inline}

// The all-gather along the last axis: kind 1, the result 2x wider on that axis.
// CHECK-LABEL: func.func private @tessera_all_gather_dxdx8_bf16_a2_n2_core(
// CHECK-SAME: memref<?x?x8xbf16>, %{{.*}}: memref<1xi64>, %{{.*}}: memref<?x?x16xbf16>)
// CHECK-DAG: %[[GATHER:.*]] = arith.constant 1 : i64
// CHECK: llvm.call %{{.*}}(%[[GATHER]], %[[GATHER]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}})
// CHECK-LABEL: func.func private @tessera_all_gather_dxdx8_bf16_a2_n2_wrap(
// CHECK: memref.alloc(%{{.*}}, %{{.*}}) : memref<?x?x16xbf16>
func.func @forward(%x: tensor<?x?x8xbf16>, %c: tensor<1xi64>) -> tensor<?x?x16xbf16> {
  %0 = "tessera.collective.all_reduce"(%x, %c) {ranks = 2 : i64} : (tensor<?x?x8xbf16>, tensor<1xi64>) -> tensor<?x?x8xbf16>
  %1 = "tessera.collective.all_gather"(%0, %c) {axis = 2 : i64, ranks = 2 : i64} : (tensor<?x?x8xbf16>, tensor<1xi64>) -> tensor<?x?x16xbf16>
  return %1 : tensor<?x?x16xbf16>
}
