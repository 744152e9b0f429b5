"""``tessera.tensor.lookup``: embedding rows gathered by token id, times a scale."""

from __future__ import annotations

import math

from tessera.schema import (
    F32,
    FLOAT,
    OpDef,
    attr,
    dims,
    element_type,
    op,
    operand,
    result,
    same_dim,
    tensor,
)


@op("tessera.tensor.lookup", pure=True)
class Lookup(OpDef):
    """y[..., :] = table[ids[...], :] * scale. Gemma scales by sqrt(D) rounded to the table's
    dtype; the scale is applied in f32 and the product rounded to the result dtype."""

    table = operand(tensor(rank=2, elements=FLOAT))
    ids = operand(tensor(min_rank=1, elements=("i32", "i64")))
    y = result(tensor(min_rank=2, elements=FLOAT))
    scale = attr(F32(), default=1.0)

    def verify(self) -> None:
        table, ids, y = dims(self.table), dims(self.ids), dims(self.y)
        if len(y) != len(ids) + 1:
            raise self.error(
                f"result rank must be the ids' rank plus one ({len(ids) + 1}), found {len(y)}"
            )
        for axis, (got, want) in enumerate(zip(y, [*ids, table[1]], strict=True)):
            if not same_dim(got, want):
                raise self.error(f"result dim {axis} is {got}, expected {want}")
        if element_type(self.y) != element_type(self.table):
            raise self.error(
                f"result element type {element_type(self.y)} must match the "
                f"table's {element_type(self.table)}"
            )
        if not math.isfinite(self.scale):
            raise self.error(f"scale must be finite, found {self.scale}")
