// The last chunks break the pipelining contract: the first RUN line expects tessera-opt to
// fail on them (`not`) and checks the IR of the others; the last checks their diagnostics.
// RUN: not tessera-opt %s --split-input-file --tessera-schedule-async-copies=stages=3 2>/dev/null | filecheck %s
// RUN: not tessera-opt %s --split-input-file --tessera-schedule-async-copies=stages=2 2>/dev/null | filecheck %s --check-prefix=TWO
// RUN: tessera-opt %s --split-input-file --tessera-schedule-async-copies=stages=1 | filecheck %s --check-prefix=ONE
// RUN: tessera-opt %s --split-input-file --tessera-schedule-async-copies=stages=3 --verify-diagnostics -o /dev/null

// Two staged buffers (A at 0, B at 4096) and an f32 scratch view above them. Three stages: the
// ring of stages is [0, 24576) with stage s at +8192*s, the scratch view moves past it, and
// the kernel's shared memory grows from 12288 to 28672 bytes. The prologue commits the
// copies of iterations 0 and 1 into stages 0 and 1; each iteration waits with one group
// pending, crosses the barrier, issues iteration i+2 into stage (i+2)%3 (zero-size past the
// end), computes on stage i%3, and carries the new group's token.
// CHECK-LABEL: gpu.func @two_buffers
// CHECK-SAME: tessera.smem_bytes = 28672 : i64
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C3:.*]] = arith.constant 3 : index
// CHECK-DAG: %[[C8192:.*]] = arith.constant 8192 : index
// CHECK-DAG: %[[C24576:.*]] = arith.constant 24576 : index
// CHECK: %[[SMEM:.*]] = gpu.dynamic_shared_memory
// CHECK: memref.view %[[SMEM]][%[[C24576]]][] {{.*}} to memref<1024xf32
// CHECK: %[[A0:.*]] = memref.view %[[SMEM]][%[[C0]]][] {{.*}} to memref<64x32xbf16
// CHECK: %[[B0:.*]] = memref.view %[[SMEM]][%{{.*}}][] {{.*}} to memref<64x32xbf16
// CHECK: %[[CA0:.*]] = nvgpu.device_async_copy %{{.*}}, %[[A0]]
// CHECK: %[[CB0:.*]] = nvgpu.device_async_copy %{{.*}}, %[[B0]]
// CHECK: nvgpu.device_async_create_group %[[CA0]], %[[CB0]]
// CHECK: %[[A1:.*]] = memref.view %[[SMEM]][%[[C8192]]][]
// CHECK: nvgpu.device_async_copy %{{.*}}, %[[A1]]
// CHECK: %[[G1:.*]] = nvgpu.device_async_create_group
// CHECK: scf.for %[[I:.*]] = {{.*}} iter_args(%[[ACC:.*]] = %{{.*}}, %[[TOKEN:.*]] = %[[G1]]) -> (f32, !nvgpu.device.async.token)
// CHECK: %[[STAGE:.*]] = arith.remui %[[I]], %[[C3]]
// CHECK: %[[OFF:.*]] = arith.muli %[[STAGE]], %[[C8192]]
// CHECK: %[[A:.*]] = memref.view %[[SMEM]][%[[OFF]]][] {tessera.smem_range = array<i64: 0, 20480>}
// CHECK: %[[B:.*]] = memref.view %[[SMEM]][%{{.*}}][] {tessera.smem_range = array<i64: 4096, 24576>}
// CHECK: nvgpu.device_async_wait %[[TOKEN]] {numGroups = 1 : i32}
// CHECK-NEXT: gpu.barrier
// CHECK: %[[NEXT:.*]] = arith.addi %[[I]], %{{.*}} : index
// CHECK: %[[VALID:.*]] = arith.cmpi slt, %[[NEXT]], %{{.*}} : index
// CHECK: %[[ELEMS:.*]] = arith.select %[[VALID]], %{{.*}}, %[[C0]] : index
// CHECK: nvgpu.device_async_copy {{.*}}, 8, %[[ELEMS]] {bypassL1}
// CHECK: %[[GROUP:.*]] = nvgpu.device_async_create_group
// CHECK: memref.load %[[A]]
// CHECK: memref.load %[[B]]
// CHECK-NOT: gpu.barrier
// CHECK: scf.yield %{{.*}}, %[[GROUP]] : f32, !nvgpu.device.async.token
// CHECK-NEXT: } {tessera.pipeline_stages = 3 : i64}
// CHECK-NEXT: nvgpu.device_async_wait %{{.*}}#1 {numGroups = 0 : i32}
// CHECK-NEXT: gpu.barrier

// Two stages: one tile in flight while the other is read, so each iteration waits for all.
// TWO-LABEL: gpu.func @two_buffers
// TWO-SAME: tessera.smem_bytes = 20480 : i64
// TWO-COUNT-1: nvgpu.device_async_create_group
// TWO: scf.for
// TWO: nvgpu.device_async_wait %{{.*}} {numGroups = 0 : i32}

// One stage is the loop as written.
// ONE-LABEL: gpu.func @two_buffers
// ONE-SAME: tessera.smem_bytes = 12288 : i64
// ONE: scf.for
// ONE: nvgpu.device_async_wait %{{.*}}{{$}}
// ONE: } {tessera.pipeline}
gpu.module @kernels {
  gpu.func @two_buffers(%x: memref<?xbf16>, %w: memref<?xbf16>, %y: memref<?xf32>, %n: index) kernel attributes {tessera.smem_bytes = 12288 : i64} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c8 = arith.constant 8 : index
    %c4096 = arith.constant 4096 : index
    %c8192 = arith.constant 8192 : index
    %zero = arith.constant 0.0 : f32
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<64x32xbf16, #gpu.address_space<workgroup>>
    %b = memref.view %smem[%c4096][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<64x32xbf16, #gpu.address_space<workgroup>>
    %out = memref.view %smem[%c8192][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<1024xf32, #gpu.address_space<workgroup>>
    %tid = gpu.thread_id x
    %r = scf.for %k = %c0 to %n step %c1 iter_args(%acc = %zero) -> (f32) {
      %base = arith.muli %k, %c8 : index
      %src = arith.addi %base, %tid : index
      %t0 = nvgpu.device_async_copy %x[%src], %a[%tid, %c0], 8 {bypassL1} : memref<?xbf16> to memref<64x32xbf16, #gpu.address_space<workgroup>>
      %t1 = nvgpu.device_async_copy %w[%src], %b[%tid, %c0], 8, %c8 {bypassL1} : memref<?xbf16> to memref<64x32xbf16, #gpu.address_space<workgroup>>
      %g = nvgpu.device_async_create_group %t0, %t1
      nvgpu.device_async_wait %g
      gpu.barrier
      %va = memref.load %a[%tid, %c0] : memref<64x32xbf16, #gpu.address_space<workgroup>>
      %vb = memref.load %b[%tid, %c0] : memref<64x32xbf16, #gpu.address_space<workgroup>>
      %fa = arith.extf %va : bf16 to f32
      %fb = arith.extf %vb : bf16 to f32
      %p = arith.mulf %fa, %fb : f32
      %s = arith.addf %acc, %p : f32
      gpu.barrier
      scf.yield %s : f32
    } {tessera.pipeline}
    memref.store %r, %out[%tid] : memref<1024xf32, #gpu.address_space<workgroup>>
    memref.store %r, %y[%tid] : memref<?xf32>
    gpu.return
  }
}

// -----

// A dynamic lower bound and step: the stage is ((i - lb) / step) % 4, the tile ahead is
// i + 3*step, and prologue iteration p is lb + p*step.
// CHECK-LABEL: gpu.func @dynamic_bounds
// CHECK: %[[STEP3:.*]] = arith.muli %[[STEP:.*]], %{{.*}} : index
// CHECK: scf.for %[[I:.*]] = %[[LB:.*]] to %{{.*}} step %[[STEP]]
// CHECK: %[[SHIFTED:.*]] = arith.subi %[[I]], %[[LB]] : index
// CHECK: %[[ITER:.*]] = arith.divui %[[SHIFTED]], %[[STEP]] : index
// CHECK: arith.remui %[[ITER]], %{{.*}} : index
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 1 : i32}
// CHECK: arith.addi %[[I]], %{{.*}} : index
gpu.module @kernels {
  gpu.func @dynamic_bounds(%x: memref<?xf32>, %lb: index, %ub: index, %step: index) kernel attributes {tessera.smem_bytes = 512 : i64} {
    %c0 = arith.constant 0 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<128xf32, #gpu.address_space<workgroup>>
    %tid = gpu.thread_id x
    scf.for %k = %lb to %ub step %step {
      %t0 = nvgpu.device_async_copy %x[%k], %a[%tid], 1 : memref<?xf32> to memref<128xf32, #gpu.address_space<workgroup>>
      %g = nvgpu.device_async_create_group %t0
      nvgpu.device_async_wait %g
      gpu.barrier
      %v = memref.load %a[%tid] : memref<128xf32, #gpu.address_space<workgroup>>
      memref.store %v, %x[%tid] : memref<?xf32>
      gpu.barrier
    } {tessera.pipeline}
    gpu.return
  }
}

// -----

// A loop without the marker is left as it is.
// CHECK-LABEL: gpu.func @unmarked_loop_untouched
// CHECK-SAME: tessera.smem_bytes = 512 : i64
// CHECK: scf.for
// CHECK-NEXT: nvgpu.device_async_copy
// CHECK-NEXT: nvgpu.device_async_create_group
// CHECK-NEXT: nvgpu.device_async_wait %{{.*}}{{$}}
// CHECK-NOT: tessera.pipeline_stages
gpu.module @kernels {
  gpu.func @unmarked_loop_untouched(%x: memref<?xf32>, %n: index) kernel attributes {tessera.smem_bytes = 512 : i64} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<128xf32, #gpu.address_space<workgroup>>
    %tid = gpu.thread_id x
    scf.for %k = %c0 to %n step %c1 {
      %t0 = nvgpu.device_async_copy %x[%k], %a[%tid], 1 : memref<?xf32> to memref<128xf32, #gpu.address_space<workgroup>>
      %g = nvgpu.device_async_create_group %t0
      nvgpu.device_async_wait %g
      gpu.barrier
      %v = memref.load %a[%tid] : memref<128xf32, #gpu.address_space<workgroup>>
      memref.store %v, %x[%tid] : memref<?xf32>
      gpu.barrier
    }
    gpu.return
  }
}

// -----

// Diagnostics: a copy whose address depends on a loop-carried value cannot be issued ahead.
gpu.module @kernels {
  gpu.func @copy_depends_on_carried_value(%x: memref<?xf32>, %n: index) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<128xf32, #gpu.address_space<workgroup>>
    %tid = gpu.thread_id x
    %r = scf.for %k = %c0 to %n step %c1 iter_args(%at = %c0) -> (index) {
      // expected-error@+1 {{an async copy of a pipelined loop depends on a loop-carried value}}
      %t0 = nvgpu.device_async_copy %x[%at], %a[%tid], 1 : memref<?xf32> to memref<128xf32, #gpu.address_space<workgroup>>
      %g = nvgpu.device_async_create_group %t0
      nvgpu.device_async_wait %g
      gpu.barrier
      %v = memref.load %a[%tid] : memref<128xf32, #gpu.address_space<workgroup>>
      %next = arith.addi %at, %c1 : index
      gpu.barrier
      scf.yield %next : index
    } {tessera.pipeline}
    gpu.return
  }
}

// -----

// Diagnostics: staged buffers must be views of the dynamic shared memory, which the pass lays out.
gpu.module @kernels {
  gpu.func @copy_into_static_buffer(%x: memref<?xf32>, %n: index) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %a = memref.alloca() : memref<128xf32, #gpu.address_space<workgroup>>
    %tid = gpu.thread_id x
    scf.for %k = %c0 to %n step %c1 {
      // expected-error@+1 {{an async copy in a pipelined loop must write a memref.view of gpu.dynamic_shared_memory (found a buffer defined by memref.alloca)}}
      %t0 = nvgpu.device_async_copy %x[%k], %a[%tid], 1 : memref<?xf32> to memref<128xf32, #gpu.address_space<workgroup>>
      %g = nvgpu.device_async_create_group %t0
      nvgpu.device_async_wait %g
      gpu.barrier
      gpu.barrier
    } {tessera.pipeline}
    gpu.return
  }
}

// -----

// Diagnostics: the pipeliner places all commits and waits itself, from one group per iteration.
gpu.module @kernels {
  gpu.func @two_groups(%x: memref<?xf32>, %n: index) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %a = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<128xf32, #gpu.address_space<workgroup>>
    %tid = gpu.thread_id x
    // expected-error@+1 {{a pipelined loop needs exactly one nvgpu.device_async_create_group and one nvgpu.device_async_wait (found 2 and 1)}}
    scf.for %k = %c0 to %n step %c1 {
      %t0 = nvgpu.device_async_copy %x[%k], %a[%tid], 1 : memref<?xf32> to memref<128xf32, #gpu.address_space<workgroup>>
      %g0 = nvgpu.device_async_create_group %t0
      %t1 = nvgpu.device_async_copy %x[%k], %a[%c0], 1 : memref<?xf32> to memref<128xf32, #gpu.address_space<workgroup>>
      %g1 = nvgpu.device_async_create_group %t1
      nvgpu.device_async_wait %g1
      gpu.barrier
      gpu.barrier
    } {tessera.pipeline}
    gpu.return
  }
}
