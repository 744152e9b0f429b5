"""Attention reads its operands where the projections wrote them.

The front end splits heads as torch does: q, k and v are projected to [B, S, H, D] and
transposed to [B, H, S, D] for attention, whose output is transposed back before the output
projection. The CUDA kernels take a stride per axis, so these copies are not needed:
``fold_attention_transposes`` gives each op the untransposed tensors, marked
``tessera.layout = "bshd"`` (``dialects/head_layout.py``; the rules then pass [B, S, H, D]
strides), and the copies die:

- ``tessera.attention.flash`` whose q, k and v come from head transposes and whose only user
  transposes its result back: it reads the sources and produces the transposed-back result;
- ``tessera.attention.paged`` likewise for q and its result (the keys come from the cache);
- ``tessera.kv.append`` whose new keys and values come from head transposes.

Runs in the GPU targets' ``plan`` stage (CUDA and ROCm); the ops' schemas (and the CPU
target) keep the [B, H, S, D] form.
"""

from __future__ import annotations

from mlir import ir

from tessera.dialects.head_layout import BSHD, LAYOUT_ATTR
from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

# The ops folded and which of their operands are [B, H, S, D] tensors from head transposes.
_FOLDED = {
    "tessera.attention.flash": (0, 1, 2),
    "tessera.attention.paged": (0,),
    "tessera.kv.append": (2, 3),
}
_TRANSPOSE_MAP = "affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>"
_IDENTITY_MAP = "affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>"


def is_head_transpose(op: ir.Operation | None) -> bool:
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


def producer_chain(value: ir.Value) -> list[ir.Operation]:
    """The ops that make ``value``, nearest first, through ``tensor.cast``s (which only change
    which dims are static) up to and including the first other op."""
    chain = []
    producer = _producer(value)
    while producer is not None:
        chain.append(producer)
        if producer.name != "tensor.cast":
            break
        producer = _producer(producer.operands[0])
    return chain


def user_chain(value: ir.Value) -> list[ir.Operation] | None:
    """The single users of ``value``, through ``tensor.cast``s, up to the first other op (None
    where some value on the way has another number of users)."""
    chain = []
    while True:
        users = list(value.uses)
        if len(users) != 1:
            return None
        user = users[0].owner.operation
        chain.append(user)
        if user.name != "tensor.cast":
            return chain
        value = user.results[0]


def erase_unused(ops: list[ir.Operation]) -> None:
    for op in ops:
        if not any(list(result.uses) for result in op.results):
            op.erase()


def fold_attention_transposes(module: ir.Module | ir.Operation) -> int:
    """Rewrites every op of the kinds above whose operands come from head transposes (and
    whose result, if any, is transposed back by its only user); returns how many."""
    folded = 0
    root = module.operation if isinstance(module, ir.Module) else module
    for op in [o for o in walk_ops(root) if o.name in _FOLDED]:
        if LAYOUT_ATTR in op.attributes:
            continue
        transposed = _FOLDED[op.name]
        chains = [producer_chain(op.operands[i]) for i in transposed]
        if not all(chain and is_head_transpose(chain[-1]) for chain in chains):
            continue
        back: list[ir.Operation] | None = None
        if len(op.results):
            back = user_chain(op.results[0])
            if back is None or not is_head_transpose(back[-1]):
                continue
        operands = list(op.operands)
        for index, chain in zip(transposed, chains, strict=True):
            operands[index] = chain[-1].operands[0]
        attributes = {name: op.attributes[name] for name in op.attributes}
        anchor = back[-1] if back is not None else op
        with op.context, op.location, ir.InsertionPoint(anchor):
            attributes[LAYOUT_ATTR] = ir.StringAttr.get(BSHD)
            results = [back[-1].results[0].type] if back is not None else []
            folded_op = ir.Operation.create(
                op.name, results=results, operands=operands, attributes=attributes
            )
        if back is not None:
            back[-1].results[0].replace_all_uses_with(folded_op.results[0])
            erase_unused(list(reversed(back)))
        op.erase()
        for chain in chains:
            erase_unused(chain)
        folded += 1
    return folded


@register_pass("tessera-fold-attention-transposes")
def fold_attention_transposes_pass(module: ir.Operation, options: NoOptions) -> None:
    """Let tessera.attention.flash, tessera.attention.paged and tessera.kv.append read their
    [B, H, S, D] tensors in the [B, S, H, D] layout the projections write (and attention write
    its result in it; tessera.layout = "bshd"), removing the head transposes around them (run
    on generalized linalg; the GPU targets' kernels take strides)."""
    fold_attention_transposes(module)
