"""TMA tensor maps: the 128-byte descriptors through which a Hopper kernel's bulk tensor copies
read a matrix, made with the driver's ``cuTensorMapEncodeTiled``.

``tiled(matrix, box_rows, box_cols)`` describes a row-major 2-D CUDA tensor (bf16 or f16) read
in boxes of [box_rows, box_cols] elements with the 128-byte swizzle (box_cols · element size
must be 128 bytes) and zeros for elements past its edges, and returns the map as a 128-byte
CUDA tensor: the kernels take a pointer to it (``Param.tensormap``), which keeps the
parameter block small and lets a CUDA graph replay the same launch. The map holds the matrix's
address, so it must be remade when the matrix moves.
"""

from __future__ import annotations

import numpy as np
import torch

from .cuda_driver import CudaError, _driver, check, make_current

MAP_BYTES = 128
SWIZZLE_BYTES = 128


def tiled(matrix: torch.Tensor, box_rows: int, box_cols: int) -> torch.Tensor:
    """The tensor map of ``matrix`` [rows, cols] in boxes of [box_rows, box_cols], as a
    128-byte CUDA tensor."""
    if matrix.dim() != 2 or not matrix.is_cuda or not matrix.is_contiguous():
        raise CudaError("a tensor map describes a contiguous 2-D CUDA tensor")
    rows, cols = matrix.shape
    return encode(matrix.data_ptr(), matrix.dtype, rows, cols, (box_rows, box_cols), matrix.device)


def encode(
    address: int,
    dtype: torch.dtype,
    rows: int,
    cols: int,
    box: tuple[int, int],
    device: torch.device,
) -> torch.Tensor:
    """The tensor map of the row-major [rows, cols] matrix of ``dtype`` at device ``address``
    in boxes of ``box`` = [rows, cols], as a 128-byte tensor on ``device``."""
    driver = _driver()
    kinds = {
        torch.bfloat16: driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        torch.float16: driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
    }
    if dtype not in kinds:
        raise CudaError(f"a tensor map takes bf16 or f16 matrices, got {dtype}")
    box_rows, box_cols = box
    size = torch.empty((), dtype=dtype).element_size()
    if box_cols * size != SWIZZLE_BYTES:
        raise CudaError(f"a box row of {box_cols * size} bytes does not fit the 128-byte swizzle")
    if (cols * size) % 16 or address % 16:
        raise CudaError("a tensor map's rows must start at 16-byte boundaries")
    if rows <= 0 or cols <= 0:
        raise CudaError(f"a tensor map cannot describe a [{rows}, {cols}] matrix")
    make_current()
    tensor_map = check(
        driver.cuTensorMapEncodeTiled(
            kinds[dtype],
            2,
            address,
            [driver.cuuint64_t(cols), driver.cuuint64_t(rows)],
            [driver.cuuint64_t(cols * size)],
            [driver.cuuint32_t(box_cols), driver.cuuint32_t(box_rows)],
            [driver.cuuint32_t(1), driver.cuuint32_t(1)],
            driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
            driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
            driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        ),
        "cuTensorMapEncodeTiled",
        f"[{rows}, {cols}] {dtype} in boxes of [{box_rows}, {box_cols}]",
    )
    words = np.array([int(word) for word in tensor_map.opaque], dtype=np.uint64)
    if words.nbytes != MAP_BYTES:
        raise CudaError(f"a tensor map is {MAP_BYTES} bytes; the driver gave {words.nbytes}")
    # Device allocations are 256-byte aligned, beyond the 64 the map needs.
    return torch.from_numpy(words.view(np.int64)).to(device)
