// RUN: tessera-opt %s --tessera-lower-to-rocdl=chip=gfx942 | filecheck %s
// RUN: not tessera-opt %s --tessera-lower-to-rocdl=chipset=gfx942 2>&1 | filecheck %s --check-prefix=BAD

// A kernel of the shapes the ROCm target emits: math without device libraries (exp through
// the exp2 intrinsic, sqrt as the sqrt intrinsic, cos as arithmetic), a 32-lane shuffle, a
// tile staged in LDS (address space 3) and an MFMA on it, lowered for gfx942 (wave64).
// CHECK: gpu.module @kernels [#rocdl.target<chip = "gfx942", abi = "500">]
// CHECK: llvm.mlir.global {{.*}}@__dynamic_shmem__0() {addr_space = 3 : i32} : !llvm.array<0 x i8>
// CHECK: llvm.func @mix(
// CHECK-SAME: rocdl.flat_work_group_size = "64,64", rocdl.kernel
// CHECK: rocdl.workitem.id.x
// CHECK: llvm.call_intrinsic "llvm.exp2.f32"
// CHECK: llvm.call_intrinsic "llvm.sqrt.f32"
// CHECK: llvm.intr.roundeven
// CHECK: rocdl.ds_bpermute
// CHECK: llvm.store {{.*}} : vector<4xbf16>, !llvm.ptr<3>
// CHECK: rocdl.barrier
// CHECK: llvm.load {{.*}} : !llvm.ptr<3> -> vector<4xbf16>
// CHECK: rocdl.mfma.f32.16x16x16bf16.1k
// CHECK-NOT: __ocml
// CHECK-NOT: gpu.func
// BAD: error: pass 'tessera-lower-to-rocdl' has no option 'chipset=gfx942' (options: chip)
gpu.module @kernels [#rocdl.target<chip = "gfx942", abi = "500">] {
  gpu.func @mix(%x: memref<?xf32>, %a: memref<?xbf16>, %y: memref<?xf32>) kernel attributes {known_block_size = array<i32: 64, 1, 1>} {
    %c0 = arith.constant 0 : index
    %w32 = arith.constant 32 : i32
    %one = arith.constant 1 : i32
    %t = gpu.thread_id x
    %v = memref.load %x[%t] : memref<?xf32>
    %e = math.exp %v : f32
    %s = math.sqrt %e : f32
    %c = math.cos %s : f32
    %r:2 = gpu.shuffle xor %c, %one, %w32 : f32
    %lds = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
    %tile = memref.view %lds[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<16x16xbf16, #gpu.address_space<workgroup>>
    %av = vector.load %a[%c0] : memref<?xbf16>, vector<4xbf16>
    vector.store %av, %tile[%c0, %c0] : memref<16x16xbf16, #gpu.address_space<workgroup>>, vector<4xbf16>
    gpu.barrier
    %frag = vector.load %tile[%c0, %c0] : memref<16x16xbf16, #gpu.address_space<workgroup>>, vector<4xbf16>
    %zero = arith.constant dense<0.0> : vector<4xf32>
    %d = amdgpu.mfma 16x16x16 %frag * %frag + %zero blgp = none : vector<4xbf16>, vector<4xbf16>, vector<4xf32>
    %d0 = vector.extract %d[0] : f32 from vector<4xf32>
    %sum = arith.addf %d0, %r#0 : f32
    memref.store %sum, %y[%t] : memref<?xf32>
    gpu.return
  }
}
