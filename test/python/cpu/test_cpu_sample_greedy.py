"""tessera.sample.greedy on the CPU: each row's token is the first-index argmax of the logits
the CPU projection computes from the same operands (with the softcap as the op says: in f32
before the one rounding, or each step rounded), NaN above every number, ties to the first."""

from __future__ import annotations

import math

import pytest
import seeds
import torch
from test_cpu_proj import projection_source, tensor_type
from test_cpu_support import randn, run


def greedy_source(
    leading: list[int | None],
    k: int,
    n: int,
    dtype: str,
    has_bias: bool,
    softcap: float | None,
    rounded: bool,
) -> str:
    x_type, w_type = tensor_type([*leading, k], dtype), tensor_type([n, k], dtype)
    bias_type = tensor_type([n], dtype) if has_bias else None
    attrs = []
    if softcap is not None:
        attrs.append(f"softcap = {softcap!r} : f32")
    if rounded:
        attrs.append("rounded_softcap = true")
    params = f"%x: {x_type}, %w: {w_type}" + (f", %b: {bias_type}" if bias_type else "")
    operands = "%x, %w" + (", %b" if bias_type else "")
    types = f"{x_type}, {w_type}" + (f", {bias_type}" if bias_type else "")
    token_type = tensor_type(leading, "i64")
    return f"""
func.func @forward({params}) -> {token_type} {{
  %t = "tessera.sample.greedy"({operands}) {{{", ".join(attrs)}}} : ({types}) -> {token_type}
  return %t : {token_type}
}}"""


def expected_tokens(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    dtype: str,
    softcap: float | None,
    rounded: bool,
    leading: list[int | None],
) -> torch.Tensor:
    """argmax of the CPU projection's logits (the rounded softcap applied after, step by step
    in the logits' dtype, as the op defines it)."""
    k, n = x.shape[-1], w.shape[0]
    cap = None if rounded else softcap
    source = projection_source(
        tensor_type([*leading, k], dtype),
        tensor_type([n, k], dtype),
        tensor_type([*leading, n], dtype),
        tensor_type([n], dtype) if bias is not None else None,
        True,
        cap,
    )
    logits = run(source, [x, w] + ([bias] if bias is not None else []))
    if rounded:
        assert softcap is not None
        logits = ((logits / softcap).float().tanh().to(logits.dtype) * softcap).float()
    return torch.argmax(logits.float(), dim=-1)


CASES = [
    # (leading dims (None = dynamic), their sizes, K, N, bias, softcap, rounded, dtype)
    ([None, None], [3, 2], 64, 200, False, None, False, "f32"),
    ([None], [5], 67, 93, True, 30.0, False, "f32"),
    ([None, None], [2, 3], 48, 130, False, None, False, "bf16"),
    ([None], [4], 40, 300, True, 5.0, False, "bf16"),
    ([None, 1], [3, 1], 40, 300, False, 5.0, True, "bf16"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[7]}-N{c[3]}-cap{c[5]}-r{int(c[6])}")
def test_tokens_are_the_first_argmax_of_the_logits(case: tuple) -> None:
    generator = seeds.generator()
    leading, sizes, k, n, has_bias, softcap, rounded, dtype = case
    x = randn((*sizes, k), dtype, generator)
    # Logits spread past the softcap, so that it saturates and rounded steps tie values.
    w = randn((n, k), dtype, generator, 8 / math.sqrt(k))
    bias = randn((n,), dtype, generator) if has_bias else None
    source = greedy_source(leading, k, n, dtype, has_bias, softcap, rounded)
    tokens = run(source, [x, w] + ([bias] if bias is not None else []))
    assert tokens.dtype == torch.int64 and tokens.shape == tuple(sizes)
    expected = expected_tokens(x, w, bias, dtype, softcap, rounded, leading)
    assert torch.equal(tokens, expected)


def test_ties_take_the_first_index_and_nan_wins() -> None:
    generator = seeds.generator()
    k, n = 32, 64
    x = randn((2, k), "f32", generator)
    w = randn((n, k), "f32", generator, 1 / math.sqrt(k))
    w[[5, 40]] = 10 * x[0]  # row 0: columns 5 and 40 tie as its largest
    w[[9, 50]] = 10 * x[1]  # row 1: columns 9 and 50 tie
    source = greedy_source([None], k, n, "f32", False, None, False)
    assert run(source, [x, w]).tolist() == [5, 9]
    # A last-index rule would answer otherwise: the data has ties.
    logits = x @ w.T
    assert logits[0, 5] == logits[0, 40] and logits[1, 9] == logits[1, 50]
    w[[30, 20], 3] = math.nan  # NaN columns 20 and 30 in every row: the first wins
    assert run(source, [x, w]).tolist() == [20, 20]
