"""``tessera.collective.all_gather``: every rank's tensor, concatenated along one axis."""

from __future__ import annotations

from tessera.schema import (
    FLOAT,
    I64,
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

from .collective_communicator import COMMUNICATOR_TYPE, verify_communicator


@op("tessera.collective.all_gather")
class AllGather(OpDef):
    """y = concat(x of rank 0, ..., x of rank ranks-1) along ``axis``: y's size on the axis is
    ranks times x's, every other dim is x's (the vocabulary shards of the logits become the
    logits). Not pure, for the reason ``tessera.collective.all_reduce`` gives."""

    x = operand(tensor(min_rank=1, elements=FLOAT))
    communicator = operand(COMMUNICATOR_TYPE)
    y = result(tensor(min_rank=1, elements=FLOAT))
    axis = attr(I64(), doc="the axis along which the ranks' tensors are concatenated")
    ranks = attr(I64(), doc="the number of ranks that take part")

    def verify(self) -> None:
        verify_communicator(self, self.communicator, self.ranks)
        x, y = dims(self.x), dims(self.y)
        if not 0 <= self.axis < len(x):
            raise self.error(f"axis {self.axis} is not an axis of x {self.x.type}")
        if len(y) != len(x) or element_type(self.y) != element_type(self.x):
            raise self.error(
                f"result {self.y.type} must have x's rank and element type ({self.x.type})"
            )
        for axis, (got, have) in enumerate(zip(y, x, strict=True)):
            want = have * self.ranks if axis == self.axis and have is not None else have
            if not same_dim(got, want):
                raise self.error(f"result dim {axis} is {got}, expected {want}")
