"""The memory-bound CUDA kernels (RMSNorm, RoPE, lookup, elementwise generics) run without a
GPU: the interpreter (``gpu_interpreter``) executes their gpu.func over every thread of the grid,
and the results are compared with float64 references and torch's same-dtype computation. The
interpreter also checks what a GPU would not report: every access in bounds and as aligned as
promised, no element stored twice, no race between threads or warps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from elementwise_ir import TRANSPOSE, softcap_ir
from gpu_interpreter import (
    Buffer,
    KernelFault,
    bf16_bits_to_f32,
    f32_to_bf16_bits,
    kernels_in,
    run_kernel,
)
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cpu.rope import inverse_frequencies
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.elementwise import build_elementwise, generics_from_text
from tessera.lowering.cuda.kernels.lookup import LookupConfig, build_lookup, rounded_scale
from tessera.lowering.cuda.kernels.rms_norm import PreNorm, RmsNormConfig, build_rms_norm
from tessera.lowering.cuda.kernels.rope import (
    RopeConfig,
    build_rope,
    build_rope_siblings,
    rope_layout,
)

TORCH = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
BOUND = {"bf16": 1e-2, "f16": 2e-3, "f32": 1e-5}


def buffer(values: torch.Tensor, dtype: str) -> Buffer:
    """A torch tensor as an interpreter buffer of ``dtype`` (flat)."""
    if dtype == "i1":
        return Buffer.of(values.to(torch.int8), "i1")
    return Buffer.of(values, dtype)


def tensor(memory: Buffer, shape: tuple[int, ...]) -> torch.Tensor:
    return memory.tensor(shape)


def poison(shape: tuple[int, ...], dtype: str) -> Buffer:
    return Buffer.poisoned(math.prod(shape), dtype)


def randn(shape: tuple[int, ...], dtype: str, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * scale).to(TORCH[dtype])


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out64, ref64 = out.double(), ref.double()
    return ((out64 - ref64).norm() / ref64.norm()).item()


def built(build: Callable[[KernelModule], KernelInfo]) -> tuple[KernelModule, KernelInfo]:
    context = make_context()
    with context, ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build(km)
        km.module.operation.verify()
    return km, info


def interpret(km: KernelModule, info: KernelInfo, bindings: dict[str, Any]) -> None:
    run_kernel(km.module, info, bindings)


# -- RMSNorm -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "width", "rows", "offset"),
    [
        ("bf16", 36, 37, 1.0),  # 4 lanes a row, 32 rows a block, the last block partial
        ("bf16", 2304, 3, 1.0),  # 3 warps a row: the shared-memory reduction
        ("f16", 48, 5, 1.0),
        ("f32", 77, 9, 0.0),  # scalar accesses, a partial last vector per lane
        ("f32", 3, 4, 1.0),
    ],
)
def test_rms_norm(dtype: str, width: int, rows: int, offset: float) -> None:
    km, info = built(lambda km: build_rms_norm(km, RmsNormConfig(dtype, width, 1e-6, offset)))
    x = randn((rows, width), dtype, 1, 2.0)
    w = randn((width,), dtype, 2, 0.5)
    y = poison((rows, width), dtype)
    interpret(km, info, {"x": buffer(x, dtype), "w": buffer(w, dtype), "y": y, "rows": rows})
    out = tensor(y, (rows, width))
    h = x.double()
    ref = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * (offset + w.double())
    assert not torch.isnan(out.float()).any()
    assert relative_error(out, ref) < BOUND[dtype]


@pytest.mark.parametrize(("dtype", "width"), [("bf16", 2048), ("f16", 36)])
def test_rms_norm_residual_in_place(dtype: str, width: int) -> None:
    """s = x + r rounded (written over r), y = rmsnorm(s) (written over x)."""
    rows = 5
    km, info = built(
        lambda km: build_rms_norm(km, RmsNormConfig(dtype, width, 1e-6, residual=True))
    )
    x, r = randn((rows, width), dtype, 3), randn((rows, width), dtype, 4)
    w = randn((width,), dtype, 5, 0.5)
    xm, rm = buffer(x, dtype), buffer(r, dtype)
    bindings = {"x": xm, "r": rm, "w": buffer(w, dtype), "y": xm, "s": rm, "rows": rows}
    interpret(km, info, bindings)
    s = x + r
    assert torch.equal(tensor(rm, (rows, width)), s)
    h = s.double()
    ref = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w.double())
    assert relative_error(tensor(xm, (rows, width)), ref) < BOUND[dtype]


@pytest.mark.parametrize(("dtype", "width"), [("bf16", 2048), ("f16", 36)])
def test_rms_norm_of_a_normed_sum_in_place(dtype: str, width: int) -> None:
    """Gemma 2's "norm, add, norm": x normed with pre_w (rounded), s = r + that (rounded,
    written over r), y = rmsnorm(s) (written over x); the same bits as the two kernels."""
    rows = 5
    pre = PreNorm(1e-6, 1.0, dtype)
    km, info = built(
        lambda km: build_rms_norm(km, RmsNormConfig(dtype, width, 1e-6, residual=True, pre=pre))
    )
    x, r = randn((rows, width), dtype, 6, 3.0), randn((rows, width), dtype, 7)
    pre_w, w = randn((width,), dtype, 8, 0.5), randn((width,), dtype, 9, 0.5)
    xm, rm = buffer(x, dtype), buffer(r, dtype)
    bindings = {"x": xm, "pre_w": buffer(pre_w, dtype), "r": rm, "w": buffer(w, dtype)}
    interpret(km, info, {**bindings, "y": xm, "s": rm, "rows": rows})
    # the same through the plain kernel, then the residual one
    km1, info1 = built(lambda km: build_rms_norm(km, RmsNormConfig(dtype, width, 1e-6)))
    normed = poison((rows, width), dtype)
    xs = {"x": buffer(x, dtype), "w": buffer(pre_w, dtype), "y": normed, "rows": rows}
    interpret(km1, info1, xs)
    km2, info2 = built(
        lambda km: build_rms_norm(km, RmsNormConfig(dtype, width, 1e-6, residual=True))
    )
    r2 = buffer(r, dtype)
    y2 = poison((rows, width), dtype)
    interpret(
        km2, info2, {"x": normed, "r": r2, "w": buffer(w, dtype), "y": y2, "s": r2, "rows": rows}
    )
    assert torch.equal(tensor(rm, (rows, width)), tensor(r2, (rows, width)))
    assert torch.equal(tensor(xm, (rows, width)), tensor(y2, (rows, width)))
    # and against float64 for the whole chain
    h = x.double()
    first = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + pre_w.double())
    total = first.to(x.dtype).double() + r.double()
    ref = total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w.double())
    assert relative_error(tensor(xm, (rows, width)), ref) < BOUND[dtype]


# -- RoPE ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "heads", "head_dim", "rotary", "pos_dtype"),
    [
        ("bf16", 8, 256, None, "i64"),
        ("f32", 3, 24, 16, "i64"),  # partial rotary: the tail is copied
        ("f16", 1, 16, None, "i32"),
        ("bf16", 6, 24, None, "i64"),
    ],
)
def test_rope(dtype: str, heads: int, head_dim: int, rotary: int | None, pos_dtype: str) -> None:
    cfg = RopeConfig(dtype, heads, head_dim, 10000.0, 1.0, rotary, pos_dtype)
    km, info = built(lambda km: build_rope(km, cfg))
    batch, length = 2, 3
    shape = (batch, length, heads, head_dim)
    x = randn(shape, dtype, 6)
    pos = torch.randint(0, 8192, (batch, length), generator=torch.Generator().manual_seed(7))
    y = poison(shape, dtype)
    positions = buffer(pos, pos_dtype)
    interpret(km, info, {"x": buffer(x, dtype), "pos": positions, "y": y, "B": batch, "S": length})
    out = tensor(y, shape)
    rot = rotary or head_dim
    inv_freq = torch.tensor(inverse_frequencies(10000.0, rot, 1.0), dtype=torch.float32)
    angle = (pos.float()[..., None] * inv_freq).double()[:, :, None, :]
    h = x.double()
    x1, x2 = h[..., : rot // 2], h[..., rot // 2 : rot]
    ref = torch.cat(
        (x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin(), h[..., rot:]),
        dim=-1,
    )
    assert not torch.isnan(out.float()).any()
    assert relative_error(out, ref) < BOUND[dtype]
    if dtype == "f32":
        return  # numpy's and torch's float32 cos/sin differ in the last bit here and there
    # Same-dtype torch (transformers' formula): rounded cos/sin and products agree bit for bit
    # but where numpy's float32 cos/sin round to another bf16/f16 than torch's.
    freqs = pos.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    part = x[..., :rot]
    rotated = torch.cat((-part[..., rot // 2 :], part[..., : rot // 2]), dim=-1)
    same = torch.cat((part * cos + rotated * sin, x[..., rot:]), dim=-1)
    assert (out == same).float().mean().item() > 0.98


@pytest.mark.parametrize("length", [1, 70])  # one block of the first tensor, or two
def test_two_ropes_in_one_launch_equal_two_launches(length: int) -> None:
    """A decode step's q and k (8 heads and 1, head dim 256) rotated by one launch: bit for bit
    what two launches of the single kernel give."""
    q_cfg = RopeConfig("bf16", 8, 256, 10000.0, 1.0, None, "i64")
    k_cfg = RopeConfig("bf16", 1, 256, 10000.0, 1.0, None, "i64")
    batch = 2
    pos = torch.randint(0, 8192, (batch, length), generator=torch.Generator().manual_seed(9))
    q = randn((batch, length, 8, 256), "bf16", 10)
    k = randn((batch, length, 1, 256), "bf16", 11)
    singles = []
    for cfg, x in ((q_cfg, q), (k_cfg, k)):
        km, info = built(lambda km, c=cfg: build_rope(km, c))
        y = poison(tuple(x.shape), "bf16")
        bindings = {"x": buffer(x, "bf16"), "pos": buffer(pos, "i64"), "y": y}
        interpret(km, info, {**bindings, "B": batch, "S": length})
        singles.append(tensor(y, tuple(x.shape)))
    km, info = built(lambda km: build_rope_siblings(km, (q_cfg, k_cfg)))
    y0, y1 = poison(tuple(q.shape), "bf16"), poison(tuple(k.shape), "bf16")
    blocks0 = -(-batch * length * rope_layout(q_cfg).per_token // 128)
    interpret(
        km,
        info,
        {
            "x0": buffer(q, "bf16"),
            "y0": y0,
            "x1": buffer(k, "bf16"),
            "y1": y1,
            "pos": buffer(pos, "i64"),
            "B": batch,
            "S": length,
            "blocks0": blocks0,
        },
    )
    assert torch.equal(tensor(y0, tuple(q.shape)), singles[0])
    assert torch.equal(tensor(y1, tuple(k.shape)), singles[1])


# -- lookup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "vocab", "width", "scale", "ids_dtype"),
    [
        ("bf16", 300, 2048, 2048**0.5, "i64"),
        ("f32", 100, 36, 1.0, "i32"),
        ("f16", 50, 48, 48**0.5, "i64"),
    ],
)
def test_lookup(dtype: str, vocab: int, width: int, scale: float, ids_dtype: str) -> None:
    cfg = LookupConfig(dtype, vocab, width, ids_dtype, scale)
    km, info = built(lambda km: build_lookup(km, cfg))
    n = 7
    table = randn((vocab, width), dtype, 8)
    ids = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(9))
    ids[1], ids[4] = -1, vocab  # out of range: rows of zeros
    y = poison((n, width), dtype)
    bindings = {"table": buffer(table, dtype), "ids": buffer(ids, ids_dtype), "y": y, "n": n}
    interpret(km, info, bindings)
    out = tensor(y, (n, width))
    factor = rounded_scale(scale, dtype)
    rows = table[ids.clamp(0, vocab - 1)]
    expected = (rows.float() * factor).to(TORCH[dtype]) if factor != 1.0 else rows
    expected[1] = 0
    expected[4] = 0
    assert torch.equal(out, expected)


# -- elementwise ---------------------------------------------------------------------------

SOFTCAP = softcap_ir(40)
TRANSPOSE_INNER = """
func.func @f(%x: tensor<?x6xf32>) -> tensor<6x?xf32> {
  %c0 = arith.constant 0 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x6xf32>
  %e = tensor.empty(%d0) : tensor<6x?xf32>
  %t = linalg.transpose ins(%x : tensor<?x6xf32>) outs(%e : tensor<6x?xf32>) permutation = [1, 0]
  return %t : tensor<6x?xf32>
}
"""
BROADCAST_ADD = """
func.func @f(%x: tensor<?x?x48xbf16>, %w: tensor<48xbf16>) -> tensor<?x?x48xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x48xbf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x48xbf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x?x48xbf16>
  %b = linalg.broadcast ins(%w : tensor<48xbf16>) outs(%e : tensor<?x?x48xbf16>)
      dimensions = [0, 1]
  %a = arith.addf %x, %b : tensor<?x?x48xbf16>
  %f = arith.extf %a : tensor<?x?x48xbf16> to tensor<?x?x48xf32>
  return %f : tensor<?x?x48xf32>
}
"""
MASK = """
#out = affine_map<(d0, d1) -> (d0, d1)>
func.func @f(%e: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %ninf = arith.constant -1.0e4 : f32
  %zero = arith.constant 0.0 : f32
  %r = linalg.generic {indexing_maps = [#out], iterator_types = ["parallel", "parallel"]}
      outs(%e : tensor<?x?xf32>) {
  ^bb0(%o: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %c = arith.cmpi ule, %j, %i : index
    %v = arith.select %c, %zero, %ninf : f32
    linalg.yield %v : f32
  } -> tensor<?x?xf32>
  return %r : tensor<?x?xf32>
}
"""
SCALED_ROOT = """
#row = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#col = affine_map<(d0, d1, d2) -> (d2)>
#one = affine_map<(d0, d1, d2) -> ()>
func.func @f(%x: tensor<?x?x48xf16>, %w: tensor<48xf16>, %s: f32) -> tensor<?x?x48xf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x48xf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x48xf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x?x48xf16>
  %r = linalg.generic {indexing_maps = [#row, #col, #one, #row],
      iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x, %w, %s : tensor<?x?x48xf16>, tensor<48xf16>, f32) outs(%e : tensor<?x?x48xf16>) {
  ^bb0(%a: f16, %b: f16, %c: f32, %o: f16):
    %p = arith.mulf %a, %b : f16
    %q = arith.extf %p : f16 to f32
    %t = arith.mulf %q, %c : f32
    %abs = math.absf %t : f32
    %u = math.sqrt %abs : f32
    %v = arith.truncf %u : f32 to f16
    linalg.yield %v : f16
  } -> tensor<?x?x48xf16>
  return %r : tensor<?x?x48xf16>
}
"""
LESS = """
func.func @f(%x: tensor<?x?x36xf32>, %y: tensor<?x?x36xf32>) -> tensor<?x?x36xi1> {
  %c = arith.cmpf olt, %x, %y : tensor<?x?x36xf32>
  return %c : tensor<?x?x36xi1>
}
"""


def run_generic(
    text: str, inputs: list[tuple[torch.Tensor, str]], out: tuple[tuple[int, ...], str], dims: dict
) -> torch.Tensor:
    context = make_context()
    module, generics = generics_from_text(text, context)
    assert len(generics) == 1
    with context, ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_elementwise(km, generics[0])
        km.module.operation.verify()
    bindings: dict[str, Any] = {
        f"in{k}": buffer(t, d) if d != "scalar" else float(t) for k, (t, d) in enumerate(inputs)
    }
    shape, dtype = out
    result = poison(shape, dtype) if dtype != "i1" else buffer(torch.ones(shape), "i1")
    bindings["out"] = result
    bindings.update(dims)
    interpret(km, info, bindings)
    del module
    return tensor(result, shape)


def test_softcap() -> None:
    x = randn((2, 3, 40), "bf16", 10, 40.0)
    out = run_generic(SOFTCAP, [(x, "bf16")], ((2, 3, 40), "bf16"), {"d0": 2, "d1": 3})
    ref = torch.tanh(x.double() / 30.0) * 30.0
    assert relative_error(out, ref) < 1e-2
    same = (torch.tanh(x.float() / 30.0) * 30.0).to(torch.bfloat16)
    assert (out == same).float().mean().item() > 0.98


def test_transpose_of_middle_dims() -> None:
    x = randn((2, 5, 4, 24), "bf16", 11)
    out = run_generic(TRANSPOSE, [(x, "bf16")], ((2, 4, 5, 24), "bf16"), {"d0": 2, "d2": 5})
    assert torch.equal(out, x.permute(0, 2, 1, 3))


def test_transpose_of_the_innermost_dim() -> None:
    x = randn((7, 6), "f32", 12)
    out = run_generic(TRANSPOSE_INNER, [(x, "f32")], ((6, 7), "f32"), {"d1": 7})
    assert torch.equal(out, x.t())


def test_broadcast_add_then_widen() -> None:
    x, w = randn((3, 5, 48), "bf16", 13), randn((48,), "bf16", 14)
    out = run_generic(
        BROADCAST_ADD, [(x, "bf16"), (w, "bf16")], ((3, 5, 48), "f32"), {"d0": 3, "d1": 5}
    )
    assert torch.equal(out, (x + w).float())


def test_mask_from_indices() -> None:
    out = run_generic(MASK, [], ((5, 9), "f32"), {"d0": 5, "d1": 9})
    i, j = torch.arange(5)[:, None], torch.arange(9)[None, :]
    assert torch.equal(out, torch.where(j <= i, 0.0, -1.0e4))


def test_scalar_parameter_and_correctly_rounded_root() -> None:
    x, w = randn((2, 3, 48), "f16", 17), randn((48,), "f16", 18)
    out = run_generic(
        SCALED_ROOT,
        [(x, "f16"), (w, "f16"), (torch.tensor(2.5), "scalar")],
        ((2, 3, 48), "f16"),
        {"d0": 2, "d1": 3},
    )
    expected = torch.sqrt(((x * w).float() * 2.5).abs()).to(torch.float16)
    assert torch.equal(out, expected)


def test_boolean_output_is_bytes() -> None:
    x, y = randn((2, 3, 36), "f32", 15), randn((2, 3, 36), "f32", 16)
    out = run_generic(LESS, [(x, "f32"), (y, "f32")], ((2, 3, 36), "i1"), {"d0": 2, "d1": 3})
    assert torch.equal(out.bool(), x < y) and set(out.unique().tolist()) <= {0, 1}


def test_reference_helpers_round_like_torch() -> None:
    values = torch.randn(1000) * 100
    ours = bf16_bits_to_f32(f32_to_bf16_bits(values.numpy()))
    assert np.array_equal(ours, values.to(torch.bfloat16).float().numpy())
    assert math.isclose(rounded_scale(3.3, "bf16"), float(torch.tensor(3.3).bfloat16()))


# -- broken on purpose: the interpreter must say what is wrong ---------------------------------


def test_block_sum_without_its_barrier_is_a_race() -> None:
    """Three warps a row reduce through shared memory; without the barrier between the
    partial sums' stores and loads, warps read what others write in the same phase."""
    context = make_context()
    with context, ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_rms_norm(km, RmsNormConfig("bf16", 2304, 1e-6, 1.0))
        func = kernels_in(km.module)[info.name]
        barrier = next(
            op.operation for op in func.regions[0].blocks[0].operations if op.name == "gpu.barrier"
        )
        barrier.erase()
    x, w = randn((3, 2304), "bf16", 1), randn((2304,), "bf16", 2)
    bindings = {"x": buffer(x, "bf16"), "w": buffer(w, "bf16"), "y": poison((3, 2304), "bf16")}
    with pytest.raises(KernelFault, match=r"a race on byte \d+ of shared @.*partials"):
        interpret(km, info, {**bindings, "rows": 3})


def test_two_outputs_in_one_buffer_are_stored_twice() -> None:
    km, info = built(lambda km: build_rms_norm(km, RmsNormConfig("f16", 36, 1e-6, residual=True)))
    x, r = buffer(randn((5, 36), "f16", 3), "f16"), buffer(randn((5, 36), "f16", 4), "f16")
    w = buffer(randn((36,), "f16", 5), "f16")
    y = poison((5, 36), "f16")
    with pytest.raises(KernelFault, match="stored twice in one launch"):
        interpret(km, info, {"x": x, "r": r, "w": w, "y": y, "s": y, "rows": 5})


def test_an_in_place_transpose_is_a_race() -> None:
    context = make_context()
    _, generics = generics_from_text(TRANSPOSE_INNER, context)
    with context, ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_elementwise(km, generics[0])
    x = buffer(randn((6, 6), "f32", 12), "f32")
    with pytest.raises(KernelFault, match="races in one launch"):
        interpret(km, info, {"in0": x, "out": x, "d1": 6})
