"""CUDA kernel generators: each builds one family of ``gpu.func`` kernels into a
``KernelModule`` and returns the ``KernelInfo`` that says how to launch it."""
