"""``tessera.norm.rms``: root-mean-square normalisation over the last axis."""

from __future__ import annotations

from tessera.schema import (
    F32,
    FLOAT,
    OpDef,
    attr,
    dims,
    finite_positive,
    op,
    operand,
    result,
    same_dim,
    tensor,
)


@op("tessera.norm.rms", pure=True)
class RmsNorm(OpDef):
    """y = x · rsqrt(mean(x², axis=-1) + eps) · (offset + w), computed in f32 and rounded to
    x's dtype. Gemma's offset is 1.0 (weights stored as w - 1); most other models use 0.0."""

    x = operand(tensor(min_rank=1, elements=FLOAT))
    w = operand(tensor(rank=1, elements=FLOAT))
    y = result(tensor(min_rank=1, elements=FLOAT))
    eps = attr(F32())
    offset = attr(F32(), default=1.0)

    def verify(self) -> None:
        if not same_dim(dims(self.x)[-1], dims(self.w)[0]):
            raise self.error(
                f"weight has {dims(self.w)[0]} elements but x's last dim is {dims(self.x)[-1]}"
            )
        if str(self.y.type) != str(self.x.type):
            raise self.error(f"result type {self.y.type} must match x's type {self.x.type}")
        if not finite_positive(self.eps):
            raise self.error(f"eps must be a finite positive number, found {self.eps}")
