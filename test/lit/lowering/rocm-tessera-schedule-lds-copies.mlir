// RUN: tessera-opt %s --split-input-file --tessera-schedule-lds-copies=stages=2 --verify-diagnostics | filecheck %s
// RUN: tessera-opt %s --split-input-file --tessera-schedule-lds-copies=stages=1 | filecheck %s --check-prefix=ONE
// RUN: not tessera-opt %s --split-input-file --tessera-schedule-lds-copies=stages=3 2>&1 | filecheck %s --check-prefix=THREE

// Two staged tiles (A at 0, B at 2048; 4096 bytes rounded to the 128-byte stage alignment):
// the second buffers go 4096 bytes above the first and the kernel's LDS grows to 8192. The
// prologue loads tile 0 and stores it into buffer 0; each iteration loads tile i+1 (the
// first tile again past the end), computes on buffer i%2, stores into buffer (i+1)%2 and
// crosses one barrier.
// CHECK-LABEL: gpu.func @two_buffers
// CHECK-SAME: tessera.smem_bytes = 8192 : i64
// CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
// CHECK-DAG: %[[SPAN:.*]] = arith.constant 4096 : index
// CHECK: %[[SMEM:.*]] = gpu.dynamic_shared_memory
// CHECK: %[[A0:.*]] = memref.view %[[SMEM]]
// CHECK: %[[B0:.*]] = memref.view %[[SMEM]]
// CHECK: %[[PA:.*]] = vector.load %arg0
// CHECK: %[[PB:.*]] = vector.load %arg1
// CHECK: vector.store %[[PA]], %[[A0]]
// CHECK: vector.store %[[PB]], %[[B0]]
// CHECK-NEXT: gpu.barrier
// CHECK: scf.for %[[I:.*]] = %{{.*}} to %[[UB:.*]] step %[[STEP:[^ ]*]] iter_args
// CHECK: %[[NEXT:.*]] = arith.addi %[[I]], %[[STEP]] : index
// CHECK: %[[HAS:.*]] = arith.cmpi slt, %[[NEXT]], %[[UB]] : index
// CHECK: arith.select %[[HAS]], %[[NEXT]], %{{.*}} : index
// CHECK: %[[LA:.*]] = vector.load %arg0
// CHECK: %[[LB:.*]] = vector.load %arg1
// CHECK: %[[STAGE:.*]] = arith.remui %[[I]], %[[C2]] : index
// CHECK: arith.muli %[[STAGE]], %[[SPAN]] : index
// CHECK: %[[CA:.*]] = memref.view %[[SMEM]]
// CHECK: %[[CB:.*]] = memref.view %[[SMEM]]
// CHECK: %[[OTHER:.*]] = arith.subi %{{.*}}, %[[STAGE]] : index
// CHECK: arith.muli %[[OTHER]], %[[SPAN]] : index
// CHECK: %[[NA:.*]] = memref.view %[[SMEM]]
// CHECK: %[[NB:.*]] = memref.view %[[SMEM]]
// CHECK: memref.load %[[CA]]
// CHECK: memref.load %[[CB]]
// CHECK: math.fma
// CHECK: vector.store %[[LA]], %[[NA]]
// CHECK: vector.store %[[LB]], %[[NB]]
// CHECK-NEXT: gpu.barrier
// CHECK-NEXT: scf.yield
// CHECK-NEXT: } {tessera.pipeline_stages = 2 : i64}
// ONE-LABEL: gpu.func @two_buffers
// ONE-SAME: tessera.smem_bytes = 4096 : i64
// ONE: } {tessera.pipeline}
// THREE: stages must be 1 or 2

gpu.module @kernels [#rocdl.target<chip = "gfx942">] {
  gpu.func @two_buffers(%x: memref<?xbf16>, %w: memref<?xbf16>, %y: memref<?xf32>) kernel attributes {tessera.smem_bytes = 4096 : i64} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    %c8 = arith.constant 8 : index
    %c2048 = arith.constant 2048 : index
    %cst = arith.constant 0.0 : f32
    %t = gpu.thread_id x
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32x32xbf16, #gpu.address_space<workgroup>>
    %b = memref.view %smem[%c2048][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32x32xbf16, #gpu.address_space<workgroup>>
    %r = scf.for %i = %c0 to %c4 step %c1 iter_args(%acc = %cst) -> (f32) {
      %base = arith.muli %i, %c8 : index
      %at = arith.addi %base, %t : index
      %va = vector.load %x[%at] : memref<?xbf16>, vector<8xbf16>
      %vb = vector.load %w[%at] : memref<?xbf16>, vector<8xbf16>
      vector.store %va, %a[%t, %c0] : memref<32x32xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
      vector.store %vb, %b[%t, %c0] : memref<32x32xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
      gpu.barrier
      %ea = memref.load %a[%t, %c1] : memref<32x32xbf16, #gpu.address_space<workgroup>>
      %eb = memref.load %b[%c1, %t] : memref<32x32xbf16, #gpu.address_space<workgroup>>
      %fa = arith.extf %ea : bf16 to f32
      %fb = arith.extf %eb : bf16 to f32
      %p = math.fma %fa, %fb, %acc : f32
      gpu.barrier
      scf.yield %p : f32
    } {tessera.pipeline}
    memref.store %r, %y[%t] : memref<?xf32>
    gpu.return
  }
}

// -----

gpu.module @kernels [#rocdl.target<chip = "gfx942">] {
  gpu.func @no_barrier(%x: memref<?xbf16>) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32x32xbf16, #gpu.address_space<workgroup>>
    // expected-error@+1 {{a pipelined loop needs a gpu.barrier after its stores into LDS}}
    scf.for %i = %c0 to %c1 step %c1 {
      %v = vector.load %x[%i] : memref<?xbf16>, vector<8xbf16>
      vector.store %v, %a[%i, %c0] : memref<32x32xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
      scf.yield
    } {tessera.pipeline}
    gpu.return
  }
}

// -----

gpu.module @kernels [#rocdl.target<chip = "gfx942">] {
  gpu.func @compute_uses_copy_value(%x: memref<?xbf16>, %y: memref<?xbf16>) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32x32xbf16, #gpu.address_space<workgroup>>
    scf.for %i = %c0 to %c1 step %c1 {
      %at = arith.addi %i, %c1 : index
      %v = vector.load %x[%at] : memref<?xbf16>, vector<8xbf16>
      vector.store %v, %a[%i, %c0] : memref<32x32xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
      gpu.barrier
      // expected-error@+1 {{the compute of a pipelined loop uses a value its copy part computes}}
      %e = memref.load %a[%at, %c0] : memref<32x32xbf16, #gpu.address_space<workgroup>>
      memref.store %e, %y[%i] : memref<?xbf16>
      gpu.barrier
      scf.yield
    } {tessera.pipeline}
    gpu.return
  }
}

// -----

gpu.module @kernels [#rocdl.target<chip = "gfx942">] {
  gpu.func @view_inside_the_loop(%x: memref<?xbf16>) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    scf.for %i = %c0 to %c1 step %c1 {
      // expected-error@+1 {{'memref.view' comes before the first barrier of a pipelined loop}}
      %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32x32xbf16, #gpu.address_space<workgroup>>
      %v = vector.load %x[%i] : memref<?xbf16>, vector<8xbf16>
      vector.store %v, %a[%i, %c0] : memref<32x32xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
      gpu.barrier
      gpu.barrier
      scf.yield
    } {tessera.pipeline}
    gpu.return
  }
}
