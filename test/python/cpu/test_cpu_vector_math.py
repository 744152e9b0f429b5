"""The inline f32 exp and tanh (vector_math, used by the kernels and for math.exp/math.tanh)
against float64, in ulps, with infinities, NaN and the ends of exp's range."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_cpu_support import assert_rare_flips, run


def unary_source(op: str) -> str:
    return f"""
func.func @forward(%x: tensor<?xf32>) -> tensor<?xf32> {{
  %y = {op} %x : tensor<?xf32>
  return %y : tensor<?xf32>
}}"""


def ulps(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|out − ref| in units of the f32 spacing at ref."""
    spacing = torch.from_numpy(np.spacing(np.abs(ref.numpy()).astype(np.float32))).double()
    return (out.double() - ref).abs() / spacing


@pytest.mark.parametrize(
    "op, fn, low, high",
    [
        ("math.exp", torch.exp, -87.3, 88.7),
        ("math.tanh", torch.tanh, -12.0, 12.0),
        ("math.tanh", torch.tanh, -0.7, 0.7),  # the polynomial branch and its edge
    ],
)
def test_within_two_ulps(op: str, fn, low: float, high: float) -> None:
    x = torch.linspace(low, high, 200_003, dtype=torch.float32)
    out = run(unary_source(op), [x])
    error = ulps(out, fn(x.double()))
    assert error.max().item() <= 2.0, f"{op}: {error.max().item():.2f} ulp at {x[error.argmax()]}"


@pytest.mark.parametrize(
    "op, cases",
    [
        (
            "math.exp",
            [
                (-math.inf, 0.0),
                (math.inf, math.inf),
                (-100.0, 0.0),
                (100.0, math.inf),
                (0.0, 1.0),
                (89.0, math.inf),
            ],
        ),
        (
            "math.tanh",
            [(-math.inf, -1.0), (math.inf, 1.0), (0.0, 0.0), (-30.0, -1.0), (1e-30, 1e-30)],
        ),
    ],
)
def test_special_values(op: str, cases: list[tuple[float, float]]) -> None:
    x = torch.tensor([c[0] for c in cases] + [math.nan], dtype=torch.float32)
    out = run(unary_source(op), [x])
    assert torch.equal(out[:-1], torch.tensor([c[1] for c in cases], dtype=torch.float32))
    assert out[-1].isnan()


def test_bf16_rounds_the_f32_result() -> None:
    x = torch.linspace(-9, 9, 4099, dtype=torch.float32).to(torch.bfloat16)
    out = run(unary_source("math.tanh").replace("f32", "bf16"), [x])
    expected = torch.tanh(x.double()).to(torch.bfloat16)
    assert_rare_flips(out, expected, 0.01)
