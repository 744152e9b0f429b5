"""tessera.mlp.swi_glu on the CPU: separate and fused gate/up weights, the three activations,
torch's bf16 rounding of every intermediate, threads."""

from __future__ import annotations

import math

import pytest
import seeds
import torch
import torch.nn.functional as F
from test_cpu_support import (
    assert_rare_flips,
    check_close,
    force_threads,
    randn,
    run,
)

ACTIVATIONS = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": lambda x: F.gelu(x),
    "silu": F.silu,
}


def mlp_source(
    shape: list[int | None], hidden: int, dtype: str, activation: str, fused: bool
) -> str:
    width = shape[-1]
    x = "tensor<" + "x".join("?" if d is None else str(d) for d in shape) + f"x{dtype}>"
    down = f"tensor<{width}x{hidden}x{dtype}>"
    if fused:
        weights = [f"tensor<{2 * hidden}x{width}x{dtype}>", down]
    else:
        weights = [f"tensor<{hidden}x{width}x{dtype}>"] * 2 + [down]
    names = [f"%w{i}" for i in range(len(weights))]
    params = ", ".join([f"%x: {x}"] + [f"{n}: {t}" for n, t in zip(names, weights, strict=True)])
    return f"""
func.func @forward({params}) -> {x} {{
  %y = "tessera.mlp.swi_glu"(%x, {", ".join(names)}) {{activation = "{activation}"}}
      : ({x}, {", ".join(weights)}) -> {x}
  return %y : {x}
}}"""


def module_reference(
    x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, activation: str
) -> torch.Tensor:
    """What the torch module computes, in the inputs' dtype."""
    act = ACTIVATIONS[activation]
    return F.linear(act(F.linear(x, gate)) * F.linear(x, up), down)


CASES = [
    ([None, None, 40], [2, 5, 40], 72),
    ([None, 64], [9, 64], 96),
    ([None, 37], [3, 37], 23),  # odd widths everywhere
    ([5], [5], 16),  # a single vector
]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-F{c[2]}")
def test_gated_mlp_matches(case: tuple, fused: bool, activation: str, dtype: str) -> None:
    generator = seeds.generator()
    shape, sizes, hidden = case
    width = shape[-1]
    x = randn(tuple(sizes), dtype, generator)
    gate = randn((hidden, width), dtype, generator, 1 / math.sqrt(width))
    up = randn((hidden, width), dtype, generator, 1 / math.sqrt(width))
    down = randn((width, hidden), dtype, generator, 1 / math.sqrt(hidden))
    weights = [torch.cat([gate, up]), down] if fused else [gate, up, down]
    out = run(mlp_source(shape, hidden, dtype, activation, fused), [x, *weights])
    exact = module_reference(x.double(), gate.double(), up.double(), down.double(), activation)
    if dtype == "f32":
        check_close(out, exact, "f32", str(case), reduction=width + hidden)
        return
    # bf16: every intermediate rounded as torch's module rounds it, so the result is torch's
    # (up to rare ulp flips from summation order). Five roundings in a row can meet a badly
    # conditioned down projection, so the float64 bound is also relative to torch's own.
    expected = module_reference(x, gate, up, down, activation)
    assert_rare_flips(out, expected, 0.02)
    check_close(out, exact, "bf16", str(case), reduction=width + hidden, peer=expected)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_threaded_split_matches(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    force_threads(monkeypatch)
    generator = seeds.generator()
    width, hidden = 48, 4 * 9 + 3
    x = randn((7, width), dtype, generator)
    gate = randn((hidden, width), dtype, generator, 1 / math.sqrt(width))
    up = randn((hidden, width), dtype, generator, 1 / math.sqrt(width))
    down = randn((width, hidden), dtype, generator, 1 / math.sqrt(hidden))
    out = run(
        mlp_source([None, width], hidden, dtype, "gelu_tanh", False), [x, gate, up, down], threads=3
    )
    exact = module_reference(x.double(), gate.double(), up.double(), down.double(), "gelu_tanh")
    peer = module_reference(x, gate, up, down, "gelu_tanh")
    check_close(out, exact, dtype, reduction=width + hidden, peer=peer)
