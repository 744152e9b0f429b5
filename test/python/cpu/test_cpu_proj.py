"""tessera.mma.proj on the CPU against torch in float64: both weight layouts, bias, softcap,
mixed dtypes, any rank, dynamic leading dims, K blocks, remainders in M, N and K, threads."""

from __future__ import annotations

import math

import pytest
import seeds
import torch
from test_cpu_support import (
    TORCH_DTYPES,
    check_close,
    force_threads,
    randn,
    run,
)

from tessera.lowering.cpu.host import host
from tessera.lowering.cpu.matmul import default_tiling


def tensor_type(shape: list[int | None], dtype: str) -> str:
    return "tensor<" + "x".join("?" if d is None else str(d) for d in shape) + f"x{dtype}>"


def projection_source(
    x_type: str,
    w_type: str,
    y_type: str,
    bias_type: str | None,
    transpose_w: bool,
    softcap: float | None,
) -> str:
    attrs = [f"transpose_w = {str(transpose_w).lower()}"]
    if softcap is not None:
        attrs.append(f"softcap = {softcap!r} : f32")
    params = f"%x: {x_type}, %w: {w_type}" + (f", %b: {bias_type}" if bias_type else "")
    operands = "%x, %w" + (", %b" if bias_type else "")
    types = f"{x_type}, {w_type}" + (f", {bias_type}" if bias_type else "")
    return f"""
func.func @forward({params}) -> {y_type} {{
  %y = "tessera.mma.proj"({operands}) {{{", ".join(attrs)}}} : ({types}) -> {y_type}
  return %y : {y_type}
}}"""


def reference(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    transpose_w: bool,
    softcap: float | None,
) -> torch.Tensor:
    weight = w.double().T if transpose_w else w.double()
    y = x.double() @ weight
    if bias is not None:
        y = y + bias.double()
    if softcap is not None:
        y = softcap * torch.tanh(y / softcap)
    return y


CASES = [
    # (leading dims (None = dynamic) with their runtime sizes, K, N, transpose_w, bias, softcap)
    ([None, None], [3, 7], 64, 96, True, False, None),
    ([None, None], [2, 5], 67, 93, True, True, 30.0),
    ([None], [1], 2048, 40, True, False, None),
    ([None], [9], 2100, 33, True, True, None),  # two K blocks (f32), a partial last N tile
    ([4, 3], [4, 3], 40, 37, False, False, None),  # [K, N] weight, static leading dims
    ([None], [13], 31, 70, False, True, 5.0),
    ([], [], 48, 24, True, False, None),  # a single vector x
    ([None, 2, None], [2, 2, 3], 16, 8, True, False, None),
    ([None], [1], 5, 3, True, True, None),  # K below one vector
]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"K{c[2]}-N{c[3]}-{'nt' if c[4] else 'nn'}")
def test_projection_matches_float64(case: tuple, dtype: str) -> None:
    generator = seeds.generator()
    leading, sizes, k, n, transpose_w, has_bias, softcap = case
    w_shape = [n, k] if transpose_w else [k, n]
    x_type = tensor_type([*leading, k], dtype)
    y_type = tensor_type([*leading, n], dtype)
    bias_type = tensor_type([n], dtype) if has_bias else None
    source = projection_source(
        x_type, tensor_type(w_shape, dtype), y_type, bias_type, transpose_w, softcap
    )
    x = randn((*sizes, k), dtype, generator)
    w = randn(tuple(w_shape), dtype, generator, 1 / math.sqrt(k))
    bias = randn((n,), dtype, generator) if has_bias else None
    out = run(source, [x, w] + ([bias] if bias is not None else []))
    assert out.dtype == TORCH_DTYPES[dtype]
    check_close(out, reference(x, w, bias, transpose_w, softcap), dtype, f"{case}", reduction=k)


@pytest.mark.parametrize(
    "x_dtype, w_dtype, y_dtype",
    [
        ("bf16", "bf16", "f32"),
        ("f32", "bf16", "f32"),
        ("f16", "f16", "f16"),
        ("bf16", "f32", "bf16"),
    ],
)
def test_mixed_dtypes_accumulate_in_f32(x_dtype: str, w_dtype: str, y_dtype: str) -> None:
    generator = seeds.generator()
    k, n = 200, 50
    source = projection_source(
        tensor_type([None, k], x_dtype),
        tensor_type([n, k], w_dtype),
        tensor_type([None, n], y_dtype),
        None,
        True,
        30.0,
    )
    x = randn((6, k), x_dtype, generator)
    w = randn((n, k), w_dtype, generator, 1 / math.sqrt(k))
    out = run(source, [x, w])
    assert out.dtype == TORCH_DTYPES[y_dtype]
    # Products of the rounded inputs are exact in f32: only the final rounding remains.
    check_close(out, reference(x, w, None, True, 30.0), y_dtype, reduction=k)


def test_bf16_logits_round_once_like_torch() -> None:
    generator = seeds.generator()
    """bf16 in, bf16 out: the f32 sum is rounded once, as torch's bf16 Linear does."""
    k, n = 256, 64
    source = projection_source(
        tensor_type([None, k], "bf16"),
        tensor_type([n, k], "bf16"),
        tensor_type([None, n], "bf16"),
        None,
        True,
        None,
    )
    x = randn((8, k), "bf16", generator)
    w = randn((n, k), "bf16", generator, 1 / math.sqrt(k))
    out = run(source, [x, w])
    exact = (x.double() @ w.double().T).to(torch.bfloat16)
    # The f32 sum may differ from the exact one in its last bits, which can flip a rounding.
    mismatch = (out != exact).double().mean().item()
    assert mismatch < 0.02, f"{mismatch:.1%} of the results differ from the rounded exact sum"


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("transpose_w", [True, False])
def test_threaded_split_matches(
    dtype: str, transpose_w: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    force_threads(monkeypatch)
    generator = seeds.generator()
    """The column split across threads: every column range, including the tail, is done once."""
    k, n = 96, 8 * 13 + 5
    w_shape = [n, k] if transpose_w else [k, n]
    source = projection_source(
        tensor_type([None, k], dtype),
        tensor_type(w_shape, dtype),
        tensor_type([None, n], dtype),
        tensor_type([n], dtype),
        transpose_w,
        None,
    )
    x = randn((11, k), dtype, generator)
    w = randn(tuple(w_shape), dtype, generator, 1 / math.sqrt(k))
    bias = randn((n,), dtype, generator)
    out = run(source, [x, w, bias], threads=3)
    check_close(out, reference(x, w, bias, transpose_w, None), dtype, reduction=k)


def test_k_blocks_of_the_default_tiling_are_exercised() -> None:
    """CASES holds a K that needs two f32 K blocks, so the scratch path runs."""
    assert default_tiling("f32", host()).kc < 2100


def test_strided_operand_is_copied_to_a_contiguous_buffer() -> None:
    """x is a column slice of a wider tensor: the kernel reads a contiguous copy."""
    generator = seeds.generator()
    source = """
func.func @forward(%x: tensor<?x40xf32>, %w: tensor<24x16xf32>) -> tensor<?x24xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x40xf32>
  %s = tensor.extract_slice %x[0, 8] [%n, 16] [1, 1] : tensor<?x40xf32> to tensor<?x16xf32>
  %y = "tessera.mma.proj"(%s, %w) {transpose_w = true}
      : (tensor<?x16xf32>, tensor<24x16xf32>) -> tensor<?x24xf32>
  return %y : tensor<?x24xf32>
}"""
    x = randn((5, 40), "f32", generator)
    w = randn((24, 16), "f32", generator)
    expected = reference(x[:, 8:24], w, None, True, None)
    check_close(run(source, [x, w]), expected, "f32", reduction=16)
