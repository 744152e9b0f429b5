"""``tessera.region`` and ``tessera.yield``: one decoder block as one op."""

from __future__ import annotations

from tessera.schema import FLOAT, I64, INTEGER, OpDef, Str, attr, op, operand, result, tensor

ANY_TENSOR = tensor(elements=FLOAT + INTEGER)


@op("tessera.region", has_region=True)
class Region(OpDef):
    """A decoder block. Operands are the block's inputs (the residual stream); its one region
    has one block whose arguments stand for them, and ends in ``tessera.yield`` with the block's
    outputs. Weights and values shared by all blocks (positions, masks) are used from above."""

    inputs = operand(ANY_TENSOR, variadic=True)
    outputs = result(ANY_TENSOR, variadic=True)
    label = attr(Str(), doc="the module path of the block, e.g. model.layers.3")
    layer = attr(I64(), optional=True, doc="the block's index")
    kind = attr(Str(("global", "sliding")), optional=True, doc="global or sliding attention")

    def verify(self) -> None:
        blocks = list(self.op.regions[0].blocks)
        if len(blocks) != 1:
            raise self.error(f"expects its region to have one block, found {len(blocks)}")
        block = blocks[0]
        arg_types = [str(a.type) for a in block.arguments]
        input_types = [str(v.type) for v in self.inputs]
        if arg_types != input_types:
            raise self.error(
                f"block argument types ({', '.join(arg_types)}) must match the operand types "
                f"({', '.join(input_types)})"
            )
        operations = [o.operation for o in block.operations]
        if not operations or operations[-1].name != "tessera.yield":
            raise self.error("expects its block to end in 'tessera.yield'")
        yielded = [str(v.type) for v in operations[-1].operands]
        produced = [str(v.type) for v in self.outputs]
        if yielded != produced:
            raise self.error(
                f"yields ({', '.join(yielded)}) but its results are ({', '.join(produced)})"
            )


@op("tessera.yield", terminator=True)
class Yield(OpDef):
    """Ends a ``tessera.region``'s block, passing the block's outputs out."""

    values = operand(ANY_TENSOR, variadic=True)

    def verify(self) -> None:
        parent = self.op.parent
        if parent is None or parent.name != "tessera.region":
            raise self.error("must be inside a 'tessera.region'")
        block_ops = [o.operation for o in self.op.block.operations]
        if block_ops[-1] != self.op:
            raise self.error("must be the last op of its block")
