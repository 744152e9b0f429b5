"""Upstream ops left in mid-level IR (docs/high-level-ir.md) lower through the CPU pipeline:
elementwise arith/math chains fuse into one loop nest and follow torch's bf16 rounding, and
broadcast, transpose, matmul, batch_matmul, reduce, fill, generic, reshapes, slices, concat,
extract and softmax compute what torch computes."""

from __future__ import annotations

import math

import pytest
import seeds
import torch
from test_cpu_support import assert_rare_flips, check_close, lowered, randn, run

CHAIN = """
func.func @forward(%a: tensor<?x?x{n}x{t}>, %b: tensor<?x?x{n}x{t}>) -> tensor<?x?x{n}x{t}> {{
  %0 = arith.mulf %a, %b : tensor<?x?x{n}x{t}>
  %1 = arith.addf %0, %a : tensor<?x?x{n}x{t}>
  %2 = math.tanh %1 : tensor<?x?x{n}x{t}>
  %3 = arith.negf %b : tensor<?x?x{n}x{t}>
  %4 = math.exp %3 : tensor<?x?x{n}x{t}>
  %5 = arith.divf %2, %4 : tensor<?x?x{n}x{t}>
  %6 = arith.subf %5, %b : tensor<?x?x{n}x{t}>
  return %6 : tensor<?x?x{n}x{t}>
}}"""


def chain_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tanh(a * b + a) / torch.exp(-b) - b


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_elementwise_chain_fuses_into_one_loop_nest(dtype: str) -> None:
    generator = seeds.generator()
    source = CHAIN.format(n=67, t=dtype)
    _, _, stages = lowered(source)
    # One buffer for the result and no intermediate: the seven ops are one loop nest.
    assert stages["llvm"].count("llvm.call @malloc") == 1
    # exp and tanh became inline arithmetic (vectorisable), not libm calls.
    assert "@expf" not in stages["llvm"] and "@tanhf" not in stages["llvm"]
    a = randn((2, 5, 67), dtype, generator)
    b = randn((2, 5, 67), dtype, generator)
    out = run(source, [a, b])
    peer = chain_torch(a, b)
    check_close(out, chain_torch(a.double(), b.double()), dtype, peer=peer)
    if dtype == "bf16":
        # Each op computed in f32 and rounded to bf16, as torch does: the same values but for
        # rare ulp differences of exp/tanh that survive a bf16 rounding.
        assert (out != chain_torch(a, b)).double().mean().item() < 0.01


def test_math_functions_are_accurate_in_f32() -> None:
    generator = seeds.generator()
    source = """
func.func @forward(%x: tensor<?xf32>) -> tensor<?xf32> {
  %e = math.exp %x : tensor<?xf32>
  %t = math.tanh %x : tensor<?xf32>
  %f = math.erf %x : tensor<?xf32>
  %a = math.absf %x : tensor<?xf32>
  %r = math.rsqrt %a : tensor<?xf32>
  %s = arith.addf %e, %t : tensor<?xf32>
  %u = arith.addf %s, %f : tensor<?xf32>
  %v = arith.addf %u, %r : tensor<?xf32>
  return %v : tensor<?xf32>
}"""
    x = (torch.rand(4099, generator=generator, dtype=torch.float64) * 20 - 10).float()
    xd = x.double()
    ref = torch.exp(xd) + torch.tanh(xd) + torch.erf(xd) + torch.rsqrt(xd.abs())
    check_close(run(source, [x]), ref, "f32")


HIGH_LEVEL_RMS = """
func.func @forward(%x: tensor<?x?x{d}xbf16>, %w: tensor<{d}xbf16>) -> tensor<?x?x{d}xbf16> {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %b = tensor.dim %x, %c0 : tensor<?x?x{d}xbf16>
  %s = tensor.dim %x, %c1 : tensor<?x?x{d}xbf16>
  %xf = arith.extf %x : tensor<?x?x{d}xbf16> to tensor<?x?x{d}xf32>
  %sq = arith.mulf %xf, %xf : tensor<?x?x{d}xf32>
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty(%b, %s) : tensor<?x?xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e0 : tensor<?x?xf32>) -> tensor<?x?xf32>
  %sum = linalg.reduce ins(%sq : tensor<?x?x{d}xf32>) outs(%z : tensor<?x?xf32>) dimensions = [2]
    (%in: f32, %acc: f32) {{
      %r = arith.addf %in, %acc : f32
      linalg.yield %r : f32
    }}
  %n = arith.constant {d}.0 : f32
  %e1 = tensor.empty(%b, %s) : tensor<?x?xf32>
  %nt = linalg.fill ins(%n : f32) outs(%e1 : tensor<?x?xf32>) -> tensor<?x?xf32>
  %mean = arith.divf %sum, %nt : tensor<?x?xf32>
  %eps = arith.constant 1.0e-06 : f32
  %e2 = tensor.empty(%b, %s) : tensor<?x?xf32>
  %et = linalg.fill ins(%eps : f32) outs(%e2 : tensor<?x?xf32>) -> tensor<?x?xf32>
  %var = arith.addf %mean, %et : tensor<?x?xf32>
  %inv = math.rsqrt %var : tensor<?x?xf32>
  %e3 = tensor.empty(%b, %s) : tensor<?x?x{d}xf32>
  %ib = linalg.broadcast ins(%inv : tensor<?x?xf32>)
      outs(%e3 : tensor<?x?x{d}xf32>) dimensions = [2]
  %normed = arith.mulf %xf, %ib : tensor<?x?x{d}xf32>
  %wf = arith.extf %w : tensor<{d}xbf16> to tensor<{d}xf32>
  %e4 = tensor.empty(%b, %s) : tensor<?x?x{d}xf32>
  %wb = linalg.broadcast ins(%wf : tensor<{d}xf32>)
      outs(%e4 : tensor<?x?x{d}xf32>) dimensions = [0, 1]
  %y = arith.mulf %normed, %wb : tensor<?x?x{d}xf32>
  %yb = arith.truncf %y : tensor<?x?x{d}xf32> to tensor<?x?x{d}xbf16>
  return %yb : tensor<?x?x{d}xbf16>
}}"""


def test_reduce_broadcast_fill_casts() -> None:
    generator = seeds.generator()
    d = 48
    x = randn((2, 3, d), "bf16", generator)
    w = randn((d,), "bf16", generator)
    out = run(HIGH_LEVEL_RMS.format(d=d), [x, w])
    h = x.float()
    expected = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(
        torch.bfloat16
    )
    assert_rare_flips(out, expected, 0.01)
    check_close(out, expected, "bf16", reduction=d)


HIGH_LEVEL_ATTENTION = """
#q = affine_map<(m, n, k) -> (m, k)>
#k = affine_map<(m, n, k) -> (n, k)>
#o = affine_map<(m, n, k) -> (m, n)>
func.func @forward(%x: tensor<?x{d}xf32>, %wq: tensor<{d}x{d}xf32>, %wk: tensor<{d}x{d}xf32>)
    -> tensor<2x?x{h}xf32> {{
  %c0 = arith.constant 0 : index
  %s = tensor.dim %x, %c0 : tensor<?x{d}xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%s) : tensor<?x{d}xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x{d}xf32>) -> tensor<?x{d}xf32>
  %q = linalg.matmul indexing_maps = [#q, #k, #o]
      ins(%x, %wq : tensor<?x{d}xf32>, tensor<{d}x{d}xf32>)
          outs(%acc : tensor<?x{d}xf32>) -> tensor<?x{d}xf32>
  %k = linalg.matmul indexing_maps = [#q, #k, #o]
      ins(%x, %wk : tensor<?x{d}xf32>, tensor<{d}x{d}xf32>)
          outs(%acc : tensor<?x{d}xf32>) -> tensor<?x{d}xf32>
  %q3 = tensor.expand_shape %q [[0], [1, 2]] output_shape [%s, 2, {h}]
      : tensor<?x{d}xf32> into tensor<?x2x{h}xf32>
  %k3 = tensor.expand_shape %k [[0], [1, 2]] output_shape [%s, 2, {h}]
      : tensor<?x{d}xf32> into tensor<?x2x{h}xf32>
  %et = tensor.empty(%s) : tensor<2x?x{h}xf32>
  %qt = linalg.transpose ins(%q3 : tensor<?x2x{h}xf32>)
      outs(%et : tensor<2x?x{h}xf32>) permutation = [1, 0, 2]
  %kt = linalg.transpose ins(%k3 : tensor<?x2x{h}xf32>)
      outs(%et : tensor<2x?x{h}xf32>) permutation = [1, 0, 2]
  %ekk = tensor.empty(%s) : tensor<2x{h}x?xf32>
  %ktt = linalg.transpose ins(%kt : tensor<2x?x{h}xf32>)
      outs(%ekk : tensor<2x{h}x?xf32>) permutation = [0, 2, 1]
  %es = tensor.empty(%s, %s) : tensor<2x?x?xf32>
  %zs = linalg.fill ins(%zero : f32) outs(%es : tensor<2x?x?xf32>) -> tensor<2x?x?xf32>
  %scores = linalg.batch_matmul ins(%qt, %ktt : tensor<2x?x{h}xf32>, tensor<2x{h}x?xf32>)
      outs(%zs : tensor<2x?x?xf32>) -> tensor<2x?x?xf32>
  %p = linalg.softmax dimension(2) ins(%scores : tensor<2x?x?xf32>)
      outs(%es : tensor<2x?x?xf32>) -> tensor<2x?x?xf32>
  %eo = tensor.empty(%s) : tensor<2x?x{h}xf32>
  %zo = linalg.fill ins(%zero : f32) outs(%eo : tensor<2x?x{h}xf32>) -> tensor<2x?x{h}xf32>
  %o = linalg.batch_matmul ins(%p, %kt : tensor<2x?x?xf32>, tensor<2x?x{h}xf32>)
      outs(%zo : tensor<2x?x{h}xf32>) -> tensor<2x?x{h}xf32>
  return %o : tensor<2x?x{h}xf32>
}}"""


def test_matmul_transpose_batch_matmul_softmax() -> None:
    generator = seeds.generator()
    d, h, s = 16, 8, 11
    x = randn((s, d), "f32", generator)
    wq = randn((d, d), "f32", generator, 1 / math.sqrt(d))
    wk = randn((d, d), "f32", generator, 1 / math.sqrt(d))
    out = run(HIGH_LEVEL_ATTENTION.format(d=d, h=h), [x, wq, wk])
    q = (x.double() @ wq.double().T).reshape(s, 2, h).transpose(0, 1)
    k = (x.double() @ wk.double().T).reshape(s, 2, h).transpose(0, 1)
    expected = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ k
    check_close(out, expected, "f32", reduction=d + s)


SLICES = """
#ids = affine_map<(i, d) -> (i)>
#out = affine_map<(i, d) -> (i, d)>
func.func @forward(%x: tensor<?x{d}xf32>, %ids: tensor<?xi64>, %table: tensor<10x{d}xf32>)
    -> tensor<?x{d}xf32> {{
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x{d}xf32>
  %lo = tensor.extract_slice %x[0, 0] [%n, {half}] [1, 1]
      : tensor<?x{d}xf32> to tensor<?x{half}xf32>
  %hi = tensor.extract_slice %x[0, {half}] [%n, {half}] [1, 1]
      : tensor<?x{d}xf32> to tensor<?x{half}xf32>
  %neg = arith.negf %hi : tensor<?x{half}xf32>
  %rot = tensor.concat dim(1) %neg, %lo
      : (tensor<?x{half}xf32>, tensor<?x{half}xf32>) -> tensor<?x{d}xf32>
  %e = tensor.empty(%n) : tensor<?x{d}xf32>
  %rows = linalg.generic {{indexing_maps = [#ids, #out], iterator_types = ["parallel", "parallel"]}}
      ins(%ids : tensor<?xi64>) outs(%e : tensor<?x{d}xf32>) {{
    ^bb0(%id: i64, %o: f32):
      %r = arith.index_cast %id : i64 to index
      %col = linalg.index 1 : index
      %v = tensor.extract %table[%r, %col] : tensor<10x{d}xf32>
      linalg.yield %v : f32
  }} -> tensor<?x{d}xf32>
  %y = arith.addf %rot, %rows : tensor<?x{d}xf32>
  return %y : tensor<?x{d}xf32>
}}"""


def test_slices_concat_gather() -> None:
    generator = seeds.generator()
    d = 12
    x = randn((5, d), "f32", generator)
    ids = torch.randint(0, 10, (5,), generator=generator)
    table = randn((10, d), "f32", generator)
    out = run(SLICES.format(d=d, half=d // 2), [x, ids, table])
    expected = torch.cat([-x[:, d // 2 :], x[:, : d // 2]], dim=1) + table[ids]
    check_close(out, expected.double(), "f32")


RESHAPES = """
func.func @forward(%x: tensor<?x?x8xf32>) -> tensor<?x?x2x4xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %b = tensor.dim %x, %c0 : tensor<?x?x8xf32>
  %s = tensor.dim %x, %c1 : tensor<?x?x8xf32>
  %rows = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x8xf32> into tensor<?x8xf32>
  %e = math.exp %rows : tensor<?x8xf32>
  %back = tensor.expand_shape %e [[0, 1], [2, 3]] output_shape [%b, %s, 2, 4]
      : tensor<?x8xf32> into tensor<?x?x2x4xf32>
  return %back : tensor<?x?x2x4xf32>
}"""


def test_expand_into_several_dynamic_dims() -> None:
    """[B·S, N] back to [B, S, ...] with B and S dynamic (the front end's Linear reshape)."""
    generator = seeds.generator()
    x = randn((3, 5, 8), "f32", generator)
    out = run(RESHAPES, [x])
    check_close(out, torch.exp(x.double()).reshape(3, 5, 2, 4), "f32")
