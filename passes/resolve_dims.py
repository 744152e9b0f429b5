"""tessera-resolve-dims: a ``tensor.dim`` of a shape-preserving tessera op's result reads the
same dim of the op's input instead.

Upstream's ``resolve-shaped-type-result-dims`` answers ``tensor.dim`` through ops that
implement MLIR's shape interfaces; the tessera ops (unregistered to MLIR) do not, so a size
read from a norm's or a rope's result stays tied to that op. Two computations of the same
values then differ only in which layer's tensor they read B from, and CSE cannot merge them:
a Gemma 3 prefill broadcast its positions twice a layer (once per rope of q and k), which
also kept the two ropes from sharing one launch.
"""

from __future__ import annotations

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

# Ops whose single result has the shape of their first operand.
SAME_SHAPE = frozenset({"tessera.norm.rms", "tessera.rope.apply"})


def _shape_source(value: ir.Value) -> ir.Value:
    """The value whose shape ``value`` has, through shape-preserving tessera ops."""
    while True:
        owner = value.owner
        if not isinstance(owner, ir.OpView | ir.Operation):
            return value
        producer = owner.operation
        if producer.name not in SAME_SHAPE or not producer.operands:
            return value
        source = producer.operands[0]
        if ir.ShapedType(source.type).rank != ir.ShapedType(value.type).rank:
            return value
        value = source


@register_pass("tessera-resolve-dims")
def resolve_dims(module: ir.Operation, options: NoOptions) -> None:
    """Make every tensor.dim of a tessera.norm.rms or tessera.rope.apply result read the
    op's input (through chains of them), so CSE sees equal sizes as equal."""
    for op in walk_ops(module):
        if op.name != "tensor.dim":
            continue
        source = _shape_source(op.operands[0])
        if source != op.operands[0]:
            op.operands[0] = source
