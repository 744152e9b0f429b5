"""tessera.tensor.lookup on the CPU: rows gathered by id, scaled in f32, rounded once."""

from __future__ import annotations

import pytest
import seeds
import torch
from test_cpu_support import TORCH_DTYPES, randn, run


def lookup_source(
    vocab: int, width: int, ids_shape: list[int | None], ids_dtype: str, dtype: str, scale: float
) -> str:
    ids = "tensor<" + "x".join("?" if d is None else str(d) for d in ids_shape) + f"x{ids_dtype}>"
    y = "tensor<" + "x".join("?" if d is None else str(d) for d in ids_shape) + f"x{width}x{dtype}>"
    t = f"tensor<{vocab}x{width}x{dtype}>"
    return f"""
func.func @forward(%t: {t}, %ids: {ids}) -> {y} {{
  %y = "tessera.tensor.lookup"(%t, %ids) {{scale = {scale!r} : f32}} : ({t}, {ids}) -> {y}
  return %y : {y}
}}"""


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("ids_dtype", ["i64", "i32"])
@pytest.mark.parametrize(
    "shape, sizes", [([None, None], [2, 9]), ([None], [5]), ([2, None, 3], [2, 4, 3])]
)
@pytest.mark.parametrize("scale", [1.0, 45.25])
def test_lookup_matches_torch_exactly(
    dtype: str, ids_dtype: str, shape: list, sizes: list, scale: float
) -> None:
    generator = seeds.generator()
    vocab, width = 37, 77
    table = randn((vocab, width), dtype, generator)
    ids = torch.randint(0, vocab, tuple(sizes), generator=generator).to(
        torch.int64 if ids_dtype == "i64" else torch.int32
    )
    out = run(lookup_source(vocab, width, shape, ids_dtype, dtype, scale), [table, ids])
    # torch's own bf16 product: f32 multiply, one rounding.
    expected = (table[ids.long()].float() * torch.tensor(scale, dtype=torch.float32)).to(
        TORCH_DTYPES[dtype]
    )
    assert torch.equal(out, expected)


def test_ids_outside_the_table_give_zero_rows() -> None:
    generator = seeds.generator()
    table = randn((10, 20), "f32", generator)
    ids = torch.tensor([[3, -1, 10, 9, 1 << 40]])
    out = run(lookup_source(10, 20, [None, None], "i64", "f32", 2.0), [table, ids])
    assert torch.equal(out[0, 0], table[3] * 2.0)
    assert torch.equal(out[0, 3], table[9] * 2.0)
    for bad in (1, 2, 4):
        assert (out[0, bad] == 0).all()
