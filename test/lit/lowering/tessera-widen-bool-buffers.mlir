// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-widen-bool-buffers)' | filecheck %s

// A bool mask buffer is stored as bytes: extui before the store, trunci after the load.
// CHECK-LABEL: func.func @bool_buffer_becomes_bytes
// CHECK: %[[BUF:.*]] = memref.alloc() : memref<4xi8>
// CHECK: %[[BYTE:.*]] = arith.extui %{{.*}} : i1 to i8
// CHECK: memref.store %[[BYTE]], %[[BUF]][%{{.*}}] : memref<4xi8>
// CHECK: %[[LOADED:.*]] = memref.load %[[BUF]][%{{.*}}] : memref<4xi8>
// CHECK: %[[BIT:.*]] = arith.trunci %[[LOADED]] : i8 to i1
// CHECK: return %[[BIT]] : i1
func.func @bool_buffer_becomes_bytes(%i: index, %a: index, %b: index) -> i1 {
  %buf = memref.alloc() : memref<4xi1>
  %bit = arith.cmpi sle, %a, %b : index
  memref.store %bit, %buf[%i] : memref<4xi1>
  %back = memref.load %buf[%i] : memref<4xi1>
  return %back : i1
}

// -----

// Other buffers are left alone.
// CHECK-LABEL: func.func @float_buffer_unchanged
// CHECK: memref.alloc() : memref<4xf32>
// CHECK-NOT: arith.extui
func.func @float_buffer_unchanged(%i: index, %x: f32) {
  %buf = memref.alloc() : memref<4xf32>
  memref.store %x, %buf[%i] : memref<4xf32>
  return
}
