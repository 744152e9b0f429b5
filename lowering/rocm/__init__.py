"""The ROCm target: tessera ops lowered to the same ``gpu.func`` kernels as the CUDA target's
(built for an AMD device, ``device.py``), then ROCDL, LLVM IR, an AMDGPU code object (hsaco)
and the same launch plan, run through HIP by ``tessera.runtime``."""
