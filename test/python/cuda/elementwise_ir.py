"""IR inputs shared by the elementwise-kernel tests: upstream tensor code that the CUDA
target's plan stage turns into ``linalg.generic``s (Gemma 2's final softcap, a head transpose)."""

from __future__ import annotations


def softcap_ir(width: int) -> str:
    """Gemma 2's final logit softcap, 30·tanh(x/30) in f32 on bf16 logits of ``width``."""
    return _SOFTCAP.replace("WIDTH", str(width))


_SOFTCAP = """
func.func @f(%x: tensor<?x?xWIDTHxbf16>) -> tensor<?x?xWIDTHxbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?xWIDTHxbf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?xWIDTHxbf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x?xWIDTHxf32>
  %cst = arith.constant 3.0e1 : f32
  %s = linalg.fill ins(%cst : f32) outs(%e : tensor<?x?xWIDTHxf32>) -> tensor<?x?xWIDTHxf32>
  %x32 = arith.extf %x : tensor<?x?xWIDTHxbf16> to tensor<?x?xWIDTHxf32>
  %d = arith.divf %x32, %s : tensor<?x?xWIDTHxf32>
  %t = math.tanh %d : tensor<?x?xWIDTHxf32>
  %m = arith.mulf %t, %s : tensor<?x?xWIDTHxf32>
  %r = arith.truncf %m : tensor<?x?xWIDTHxf32> to tensor<?x?xWIDTHxbf16>
  return %r : tensor<?x?xWIDTHxbf16>
}
"""


TRANSPOSE = """
func.func @f(%x: tensor<?x?x4x24xbf16>) -> tensor<?x4x?x24xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x4x24xbf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x4x24xbf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x4x?x24xbf16>
  %t = linalg.transpose ins(%x : tensor<?x?x4x24xbf16>) outs(%e : tensor<?x4x?x24xbf16>)
      permutation = [0, 2, 1, 3]
  return %t : tensor<?x4x?x24xbf16>
}
"""
