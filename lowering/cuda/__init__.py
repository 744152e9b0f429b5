"""The CUDA target: tessera ops lowered to ``gpu.func`` kernels (NVVM), PTX and cubins, and a
launch plan the runtime replays without MLIR."""
