// RUN: tessera-opt %s --tessera-lower-to-rocdl=chip=gfx1100 | filecheck %s

// RDNA 3 (wave32): the matrix tile is a WMMA of 16 bf16 per lane into 8 f32 accumulators, and
// tanh is arithmetic around the exp2 intrinsic (no ocml).
// CHECK: gpu.module @kernels [#rocdl.target<chip = "gfx1100", abi = "500">]
// CHECK: llvm.func @wmma(
// CHECK-SAME: rocdl.flat_work_group_size = "32,32", rocdl.kernel
// CHECK: rocdl.wmma.f32.16x16x16.bf16 {{.*}} : (vector<16xi16>, vector<16xi16>, vector<8xf32>) -> vector<8xf32>
// CHECK: llvm.call_intrinsic "llvm.exp2.f32"
// CHECK-NOT: __ocml
gpu.module @kernels [#rocdl.target<chip = "gfx1100", abi = "500">] {
  gpu.func @wmma(%a: memref<?xbf16>, %y: memref<?xf32>) kernel attributes {known_block_size = array<i32: 32, 1, 1>} {
    %c0 = arith.constant 0 : index
    %t = gpu.thread_id x
    %frag = vector.load %a[%c0] : memref<?xbf16>, vector<16xbf16>
    %zero = arith.constant dense<0.0> : vector<8xf32>
    %d = amdgpu.wmma 16x16x16 %frag * %frag + %zero : vector<16xbf16>, vector<16xbf16>, vector<8xf32>
    %d0 = vector.extract %d[0] : f32 from vector<8xf32>
    %h = math.tanh %d0 : f32
    memref.store %h, %y[%t] : memref<?xf32>
    gpu.return
  }
}
