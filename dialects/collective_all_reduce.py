"""``tessera.collective.all_reduce``: the elementwise sum of a tensor over every rank."""

from __future__ import annotations

from tessera.schema import FLOAT, I64, OpDef, Str, attr, op, operand, result, tensor

from .collective_communicator import COMMUNICATOR_TYPE, verify_communicator


@op("tessera.collective.all_reduce")
class AllReduce(OpDef):
    """y = Σ over the ranks of x, in x's dtype (each rank holds one partial sum, as a
    row-parallel projection leaves it). Every rank runs the same collectives in the same
    order, so the op is not pure: it is never erased, merged or reordered with another."""

    x = operand(tensor(min_rank=1, elements=FLOAT))
    communicator = operand(COMMUNICATOR_TYPE)
    y = result(tensor(min_rank=1, elements=FLOAT))
    ranks = attr(I64(), doc="the number of ranks that take part")
    reduction = attr(Str(("sum",)), default="sum")

    def verify(self) -> None:
        verify_communicator(self, self.communicator, self.ranks)
        if str(self.y.type) != str(self.x.type):
            raise self.error(f"result type {self.y.type} must match x's type {self.x.type}")
