"""A decode plan's builds by batch (``lowering/cuda/row_classes.py``): each build's guard is 1
for the sizes it serves and 0 for the others, over the kernel parameter it names."""

from __future__ import annotations

import pytest

from tessera.lowering.cuda.kernel import KernelInfo, Param
from tessera.lowering.cuda.row_classes import guarded, row_classes
from tessera.runtime import expr


def test_a_single_row_build_and_a_several_rows_build_split_every_size() -> None:
    assert row_classes(None) == [(None, None)]
    assert row_classes(1) == [(1, None)]
    (one, single), (eight, several) = row_classes(8, "B")
    assert (one, eight) == (1, 8)
    assert single is not None and several is not None
    for size in range(1, 20):
        chosen = [expr.evaluate(guard, {"B": size}) for guard in (single, several)]
        assert chosen == ([1, 0] if size == 1 else [0, 1])


def test_a_guard_empties_the_grid_over_the_named_parameter() -> None:
    info = KernelInfo("k", (Param.scalar("B", "i64"),), ("B", "4", "1"), (32, 1, 1))
    _, several = row_classes(8, "B")[1]
    grid = guarded(info, several, "B").grid
    assert [expr.evaluate(g, {"B": 1}) for g in grid] == [1, 0, 1]
    assert [expr.evaluate(g, {"B": 3}) for g in grid] == [3, 4, 1]
    assert guarded(info, None, "B") is info
    with pytest.raises(ValueError, match="kernel k has no M parameter"):
        guarded(info, several)
