"""The AMD forms of the kernel pieces whose CUDA structure does not map (the tensor-core GEMM
as MFMA/WMMA); every other kernel is the CUDA target's generator, built for an AMD device."""
