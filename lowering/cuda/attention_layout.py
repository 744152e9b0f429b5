"""Attention reads its operands where the projections wrote them.

The front end splits heads as torch does: q, k and v are projected to [B, S, H, D] and
transposed to [B, H, S, D] for attention, whose output is transposed back before the output
projection. The CUDA attention kernel takes a stride per axis, so these four copies are not
needed: ``fold_attention_transposes`` gives the attention op the untransposed operands and the
result type of the transpose that follows it, marked ``tessera.layout = "bshd"`` (the rule
then passes [B, S, H, D] strides), and the copies die. Runs in the CUDA target's ``plan``
stage only; the op's schema (and the CPU target) keep the [B, H, S, D] form.
"""

from __future__ import annotations

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

LAYOUT_ATTR = "tessera.layout"
_TRANSPOSE_MAP = "affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>"
_IDENTITY_MAP = "affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>"


def _is_head_transpose(op: ir.Operation | None) -> bool:
    """A ``linalg.generic`` that only copies a 4-d tensor with axes 1 and 2 swapped."""
    if op is None or op.name != "linalg.generic" or len(op.operands) != 2:
        return False
    maps = [str(m) for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
    if maps != [_TRANSPOSE_MAP, _IDENTITY_MAP]:
        return False
    body = op.regions[0].blocks[0]
    operations = list(body.operations)
    return (
        len(operations) == 1
        and operations[0].operation.name == "linalg.yield"
        and operations[0].operation.operands[0] == body.arguments[0]
    )


def _producer(value: ir.Value) -> ir.Operation | None:
    owner = value.owner
    return owner.operation if isinstance(owner, ir.OpView | ir.Operation) else None


def fold_attention_transposes(module: ir.Module | ir.Operation) -> int:
    """Rewrites every attention whose q, k, v come from head transposes and whose only user
    transposes its result back; returns how many were rewritten."""
    folded = 0
    root = module.operation if isinstance(module, ir.Module) else module
    attentions = [o for o in walk_ops(root) if o.name == "tessera.attention.flash"]
    for op in attentions:
        if LAYOUT_ATTR in op.attributes:
            continue
        producers = [_producer(v) for v in list(op.operands)[:3]]
        users = list(op.results[0].uses)
        if not all(_is_head_transpose(p) for p in producers) or len(users) != 1:
            continue
        back = users[0].owner.operation
        if not _is_head_transpose(back) or back.operands[0] != op.results[0]:
            continue
        sources = [p.operands[0] for p in producers if p is not None]
        attributes = {name: op.attributes[name] for name in op.attributes}
        with op.context, op.location, ir.InsertionPoint(back):
            attributes[LAYOUT_ATTR] = ir.StringAttr.get("bshd")
            folded_op = ir.Operation.create(
                op.name, results=[back.results[0].type], operands=sources, attributes=attributes
            )
        back.results[0].replace_all_uses_with(folded_op.results[0])
        back.erase()
        op.erase()
        for producer in producers:
            if producer is not None and not list(producer.results[0].uses):
                producer.erase()
        folded += 1
    return folded


@register_pass("tessera-fold-attention-transposes")
def fold_attention_transposes_pass(module: ir.Operation, options: NoOptions) -> None:
    """Let tessera.attention.flash read q, k, v in the [B, S, H, D] layout the projections
    write and produce its result in it (tessera.layout = "bshd"), removing the head
    transposes around it (run on generalized linalg; the CUDA target's kernels take strides)."""
    fold_attention_transposes(module)
