"""Per-head RMSNorm reads and writes the projection's layout.

Gemma 3 normalises each head's queries and keys (``q_norm``, ``k_norm``) between the head
split and RoPE: the front end's [B, S, H, D] projection is transposed to [B, H, S, D], normed,
and transposed back for RoPE, which reads [B, S, H, D]. An RMSNorm over the last axis gives the
same rows whichever way the middle axes are ordered, so ``fold_norm_transposes`` gives the
norm the untransposed tensor and lets its result stand for the transposed-back one: both copies
die (four copy kernels per layer in a Gemma 3 decode step). ``tensor.dim``s of the old result
(the shapes of the copy's destination) are read from the new one with the axes swapped.

Runs in the GPU targets' ``plan`` stage before ``fold_attention_transposes``.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, tensor

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

from .attention_layout import erase_unused, is_head_transpose, producer_chain, user_chain

_SWAPPED = {0: 0, 1: 2, 2: 1, 3: 3}  # axis of [B, H, S, D] -> axis of [B, S, H, D]


def _constant_index(value: ir.Value) -> int | None:
    owner = value.owner
    op = owner.operation if isinstance(owner, ir.OpView | ir.Operation) else None
    if op is None or op.name != "arith.constant":
        return None
    return ir.IntegerAttr(op.attributes["value"]).value


def _transposed_back(value: ir.Value) -> tuple[list[ir.Operation], list[ir.Operation]] | None:
    """(the chain from ``value``'s one computing user, through casts, to a head transpose; the
    ``tensor.dim``s of ``value`` with a constant axis), or None where ``value`` has other
    users or the chain ends elsewhere."""
    dims, others = [], []
    for use in value.uses:
        user = use.owner.operation
        if user.name == "tensor.dim" and _constant_index(user.operands[1]) is not None:
            dims.append(user)
        else:
            others.append(user)
    if len(others) != 1:
        return None
    first = others[0]
    chain = [first]
    if first.name == "tensor.cast":
        rest = user_chain(first.results[0])
        if rest is None:
            return None
        chain += rest
    if not is_head_transpose(chain[-1]):
        return None
    return chain, dims


def _erase_with_destination(ops: list[ir.Operation], copy: ir.Operation) -> None:
    """Erases, in order, those of ``ops`` (a copy and the casts beside it) that nothing reads,
    then the ``copy``'s ``tensor.empty`` destination where nothing else reads it."""
    outs = copy.operands[1].owner
    erase_unused(ops)
    empty = outs.operation if isinstance(outs, ir.OpView | ir.Operation) else None
    if empty is not None and empty.name == "tensor.empty" and not list(empty.results[0].uses):
        empty.erase()


def fold_norm_transposes(module: ir.Module | ir.Operation) -> int:
    """Rewrites every 4-d ``tessera.norm.rms`` between a head transpose and its inverse (see
    the module's docstring); returns how many."""
    folded = 0
    root = module.operation if isinstance(module, ir.Module) else module
    for norm in [o for o in walk_ops(root) if o.name == "tessera.norm.rms"]:
        x_type = norm.operands[0].type
        if not isinstance(x_type, ir.RankedTensorType) or x_type.rank != 4:
            continue
        before = producer_chain(norm.operands[0])
        if not before or not is_head_transpose(before[-1]):
            continue
        after = _transposed_back(norm.results[0])
        if after is None:
            continue
        back, dims = after
        source = before[-1].operands[0]
        attributes = {name: norm.attributes[name] for name in norm.attributes}
        with norm.context, norm.location, ir.InsertionPoint(norm):
            folded_norm = ir.Operation.create(
                norm.name,
                results=[source.type],
                operands=[source, *list(norm.operands)[1:]],
                attributes=attributes,
            )
            result = folded_norm.results[0]
            if result.type != back[-1].results[0].type:
                result = tensor.cast(back[-1].results[0].type, result)
        back[-1].results[0].replace_all_uses_with(result)
        _erase_with_destination(list(reversed(back)), back[-1])
        for dim in dims:
            if list(dim.results[0].uses):
                axis = _constant_index(dim.operands[1])
                assert axis is not None
                with dim.context, dim.location, ir.InsertionPoint(dim):
                    swapped = arith.constant(ir.IndexType.get(), _SWAPPED[axis])  # type: ignore[call-arg]
                    moved = tensor.dim(folded_norm.results[0], swapped)
                dim.results[0].replace_all_uses_with(moved)
            dim.erase()
        norm.erase()
        _erase_with_destination(before, before[-1])
        folded += 1
    return folded


@register_pass("tessera-fold-norm-transposes")
def fold_norm_transposes_pass(module: ir.Operation, options: NoOptions) -> None:
    """Let a per-head tessera.norm.rms between a head transpose and its inverse read and write
    the [B, S, H, D] layout, removing both copies (run on generalized linalg in the GPU
    targets' plan stage)."""
    fold_norm_transposes(module)
