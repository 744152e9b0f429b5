"""Reshapes and broadcasts in the forms docs/high-level-ir.md names."""

from __future__ import annotations

import re

import sympy
import torch

from tessera.frontend import layout
from tessera.frontend.emitter import Emitter
from tessera.frontend.values import TVal

B, S = sympy.symbols("s0 s1")


def emitter() -> Emitter:
    return Emitter({B: ("%ids", 0, "tensor<?x?xi64>"), S: ("%ids", 1, "tensor<?x?xi64>")})


def ops_written(em: Emitter) -> list[str]:
    return [re.split(r"[ (]", line.split("= ", 1)[1])[0] for line in em.lines]


def test_groups_pair_equal_products() -> None:
    assert layout.group_dims((B, S, 64), (B, S, 4, 16)) == ([[0], [1], [2]], [[0], [1], [2, 3]])
    assert layout.group_dims((B * 4, S, 16), (B, 4, S, 16)) == ([[0], [1], [2]], [[0, 1], [2], [3]])
    assert layout.group_dims((6, 2), (4, 3)) == ([[0, 1]], [[0, 1]])
    assert layout.group_dims((B, 1, S), (B, S)) == ([[0, 1], [2]], [[0], [1]])
    assert layout.group_dims((B, 5), (B, 6)) is None


def test_linear_reshapes_are_one_collapse_and_one_expand() -> None:
    em = emitter()
    x = TVal("%x", (B, S, 64), torch.float32)
    flat = layout.reshape(em, x, (B * S, 64))
    back = layout.reshape(em, flat, (B, S, 4, 16))
    em.value(back)
    assert ops_written(em) == ["tensor.collapse_shape", "tensor.expand_shape"]
    assert "[[0, 1], [2, 3]]" in em.lines[-1] and "output_shape [%c" in em.lines[-1]


def test_unit_dims_are_written_only_where_used() -> None:
    """unsqueeze then expand (repeat_kv): the broadcast reads the original value, and no
    expand_shape is left behind."""
    em = emitter()
    k = TVal("%k", (B, 2, S, 16), torch.float32)
    unsqueezed = layout.reshape(em, k, (B, 2, 1, S, 16))
    repeated = layout.broadcast_to(em, unsqueezed, (B, 2, 3, S, 16))
    merged = layout.reshape(em, repeated, (B, 6, S, 16))
    em.value(merged)
    assert ops_written(em) == ["tensor.empty", "linalg.broadcast", "tensor.collapse_shape"]
    assert "ins(%k :" in em.lines[1] and "dimensions = [2]" in em.lines[1]
    assert "[[0], [1, 2], [3], [4]]" in em.lines[2]


def test_broadcast_drops_stretched_unit_dims_first() -> None:
    em = emitter()
    rsqrt = TVal("%r", (B, S, 1), torch.float32)
    layout.broadcast_to(em, rsqrt, (B, S, 64))
    assert ops_written(em) == ["tensor.empty", "tensor.collapse_shape", "linalg.broadcast"]
    assert "dimensions = [2]" in em.lines[-1]
    weight = TVal("%w", (64,), torch.float32)
    before = len(em.lines)
    layout.broadcast_to(em, weight, (B, S, 64))
    assert "dimensions = [0, 1]" in em.lines[-1] and len(em.lines) == before + 2
