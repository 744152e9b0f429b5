"""tessera.norm.rms on the CPU against float64: any rank, offsets, odd widths, dtypes."""

from __future__ import annotations

import pytest
import seeds
import torch
from test_cpu_support import assert_rare_flips, check_close, randn, run

from tessera.mlir_text import float_literal


def rms_source(shape: list[int | None], w_dtype: str, dtype: str, eps: float, offset: float) -> str:
    x = "tensor<" + "x".join("?" if d is None else str(d) for d in shape) + f"x{dtype}>"
    w = f"tensor<{shape[-1]}x{w_dtype}>"
    attrs = f"eps = {float_literal(eps, 'f32')} : f32, "
    attrs += f"offset = {float_literal(offset, 'f32')} : f32"
    return f"""
func.func @forward(%x: {x}, %w: {w}) -> {x} {{
  %y = "tessera.norm.rms"(%x, %w) {{{attrs}}} : ({x}, {w}) -> {x}
  return %y : {x}
}}"""


def reference(x: torch.Tensor, w: torch.Tensor, eps: float, offset: float) -> torch.Tensor:
    h = x.double()
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * (offset + w.double())


CASES = [
    ([None, None, 64], [2, 7, 64], 1e-6, 1.0),
    ([None, 77], [5, 77], 1e-5, 0.0),  # partial last vector, Llama-style offset
    ([3], [3], 1e-6, 1.0),  # one row narrower than a vector
    ([None, 2, None, 200], [2, 2, 3, 200], 1e-6, 1.0),  # rank 4, two dynamic dims
    ([4, 2048], [4, 2048], 1e-6, 1.0),  # static rows, Gemma-2B width
]


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(str(d) for d in c[1]))
def test_rms_norm_matches_float64(case: tuple, dtype: str) -> None:
    generator = seeds.generator()
    shape, sizes, eps, offset = case
    source = rms_source(shape, dtype, dtype, eps, offset)
    x = randn(tuple(sizes), dtype, generator, 3.0)
    w = randn((sizes[-1],), dtype, generator, 0.5)
    out = run(source, [x, w])
    check_close(out, reference(x, w, eps, offset), dtype, str(case), reduction=sizes[-1])


def test_bf16_matches_gemma_module() -> None:
    generator = seeds.generator()
    """Against transformers' formula run by torch itself (f32 inside, rounded once)."""
    source = rms_source([None, 96], "bf16", "bf16", 1e-6, 1.0)
    x = randn((16, 96), "bf16", generator, 2.0)
    w = randn((96,), "bf16", generator, 0.3)
    h = x.float()
    expected = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w.float())).to(
        torch.bfloat16
    )
    out = run(source, [x, w])
    # Summation order may move the f32 result by an ulp, flipping a rare bf16 rounding.
    assert_rare_flips(out, expected, 0.01)


def test_f32_weight_with_bf16_activations() -> None:
    generator = seeds.generator()
    source = rms_source([None, 40], "f32", "bf16", 1e-6, 1.0)
    x = randn((3, 40), "bf16", generator)
    w = randn((40,), "f32", generator)
    check_close(run(source, [x, w]), reference(x, w, 1e-6, 1.0), "bf16", reduction=40)
