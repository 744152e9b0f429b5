"""``tessera.rope.apply``: rotary position embedding."""

from __future__ import annotations

from tessera.schema import (
    F32,
    FLOAT,
    I64,
    OpDef,
    Str,
    attr,
    dims,
    finite_positive,
    op,
    operand,
    result,
    same_dim,
    tensor,
)


@op("tessera.rope.apply", pure=True)
class RopeApply(OpDef):
    """Rotates x [B, S, H, Dh] by angle pos/scaling · theta^(-2i/rotary_dim) for pair i.
    ``half_split`` pairs element i with i + rotary_dim/2 (Gemma, Llama); elements past
    rotary_dim pass through unchanged."""

    x = operand(tensor(rank=4, elements=FLOAT))
    positions = operand(tensor(rank=2, elements=("i32", "i64")))
    y = result(tensor(rank=4, elements=FLOAT))
    theta = attr(F32())
    scaling = attr(F32(), default=1.0, doc="linear position scaling factor")
    rotary_dim = attr(I64(), optional=True, doc="rotated leading part of Dh (default: all)")
    layout = attr(Str(("half_split",)), default="half_split")

    def verify(self) -> None:
        x, pos = dims(self.x), dims(self.positions)
        for axis, name in ((0, "batch"), (1, "sequence")):
            if not same_dim(x[axis], pos[axis]):
                raise self.error(f"positions {name} dim {pos[axis]} does not match x's {x[axis]}")
        if str(self.y.type) != str(self.x.type):
            raise self.error(f"result type {self.y.type} must match x's type {self.x.type}")
        if not finite_positive(self.theta) or not finite_positive(self.scaling):
            raise self.error("theta and scaling must be finite positive numbers")
        head_dim = x[3]
        rotary = self.rotary_dim if self.rotary_dim is not None else head_dim
        if rotary is not None and (rotary <= 0 or rotary % 2):
            raise self.error(f"rotary_dim must be positive and even, found {rotary}")
        if rotary is not None and head_dim is not None and rotary > head_dim:
            raise self.error(f"rotary_dim {rotary} exceeds the head dim {head_dim}")
