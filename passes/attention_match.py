"""The attention pattern of the high-level IR, matched from its last op back to q, k and v.

    softmax(mask(softcap(q·kᵀ · scale))) · v

with the shapes docs/high-level-ir.md gives it (see ``attention_operands`` for the matmuls and
GQA repeats, ``attention_scores`` for the elementwise middle, ``mask_eval`` for the mask). The
matcher is pure: it returns an ``AttentionMatch`` or None and never changes the IR.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import element_type, shaped_dims

from .attention_operands import batch_matmul_of, heads_of, key_of, key_value
from .attention_scores import match_scores
from .constant_values import scalar_constant
from .match import has_one_use, int_attr, producer_named

# Ops that can end the pattern: the expand_shape back to [B, H, S, Dv], or a truncf after it.
ANCHORS = ("tensor.expand_shape", "arith.truncf")


@dataclass(frozen=True)
class AttentionMatch:
    """Everything the rewrite needs: the op to replace, the flash op's operands and
    attributes, and the matched ops (erased once dead)."""

    root: ir.Operation
    q: ir.Value  # [B, Hq, S, D]
    k: ir.Value  # [B, Hkv, T, D]
    v: ir.Value  # [B, Hkv, T, Dv]
    causal: bool
    scale: float
    softcap: float | None
    window: int | None
    matched: tuple[ir.Operation, ...]


def match_attention(root: ir.Operation) -> AttentionMatch | None:
    """The attention pattern ending at ``root``, or None."""
    if root.name not in ANCHORS or len(shaped_dims(root.results[0])) != 4:
        return None
    pv = batch_matmul_of(root.results[0])
    if pv is None or pv.transposed_rhs or not has_one_use(pv.lhs):
        return None
    probabilities = heads_of(pv.lhs)
    if probabilities is None:
        return None
    p, p_views = probabilities
    if not has_one_use(p) or not all(has_one_use(op.results[0]) for op in p_views):
        return None
    ops = [*pv.ops, *p_views]
    truncf = producer_named(p, "arith.truncf")
    if truncf is not None:
        ops.append(truncf)
        p = truncf.operands[0]
    softmax = producer_named(p, "linalg.softmax")
    if softmax is None or int_attr(softmax, "dimension") != 3 or len(shaped_dims(p)) != 4:
        return None
    if not has_one_use(p) or not has_one_use(softmax.operands[0]):
        return None
    scores = match_scores(softmax.operands[0])
    if scores is None:
        return None
    q_views = heads_of(scores.qk.lhs)
    k = key_of(scores.qk)
    v = key_value(pv.rhs)
    if q_views is None or k is None or v is None:
        return None
    q = q_views[0]
    if not _shapes_agree(q, k.value, k.repeats, v.value, v.repeats, p, root.results[0]):
        return None
    if scores.mask.causal and not _as_many_keys_as_queries(scores.qk.op, softmax):
        return None
    ops += [softmax, *scores.ops, *scores.qk.ops, *q_views[1], *k.ops, *v.ops]
    return AttentionMatch(
        root=root,
        q=q,
        k=k.value,
        v=v.value,
        causal=scores.mask.causal,
        scale=scores.scale,
        softcap=scores.softcap,
        window=scores.mask.window,
        matched=tuple(_unique(ops)),
    )


def _same(*dims: int | None) -> bool:
    """Static dims among ``dims`` all agree (dynamic ones agree with anything)."""
    return len({d for d in dims if d is not None}) <= 1


def _shapes_agree(
    q: ir.Value,
    k: ir.Value,
    k_repeats: int,
    v: ir.Value,
    v_repeats: int,
    probabilities: ir.Value,
    out: ir.Value,
) -> bool:
    """q [B, Hq, S, D], k [B, Hkv, T, D], v [B, Hkv, T, Dv], probabilities [B, Hq, S, T] and
    the result [B, Hq, S, Dv]; head counts static, k and v repeated to Hq alike. The views
    all collapse batch and heads together, so equal static heads make the batches equal."""
    qs, ks, vs, ps, os = (shaped_dims(x) for x in (q, k, v, probabilities, out))
    if any(len(s) != 4 for s in (qs, ks, vs, ps, os)):
        return False
    hq, hkv = qs[1], ks[1]
    if hq is None or hkv is None or any(h is None for h in (vs[1], ps[1], os[1])):
        return False
    if hkv != vs[1] or k_repeats != v_repeats or hkv * k_repeats != hq:
        return False
    if ps[1] != hq or os[1] != hq:
        return False
    return (
        _same(qs[0], ks[0], vs[0], ps[0], os[0])
        and _same(qs[2], ps[2], os[2])
        and _same(ks[2], vs[2], ps[3])
        and _same(qs[3], ks[3])
        and _same(vs[3], os[3])
        and len({element_type(x) for x in (q, k, v, out)}) == 1
    )


def _as_many_keys_as_queries(qk: ir.Operation, softmax: ir.Operation) -> bool:
    """With dynamic queries and keys a causal mask is read as key ≤ query, which is flash
    attention's causality (query i sees keys up to i + T − S) only when T = S: true when an
    empty tensor the pattern fills ([B·H, S, T] accumulator, [B, H, S, T] softmax output)
    was made with one size for both. (Static sizes were aligned by the mask classifier.)"""
    queries, keys = shaped_dims(softmax.results[0])[2:]
    if queries is not None and keys is not None:
        return True
    if queries is not None or keys is not None:
        return False
    for init, axes in ((qk.operands[2], (1, 2)), (softmax.operands[1], (2, 3))):
        sizes = _empty_sizes(init)
        if sizes is not None and _same_size(sizes[axes[0]], sizes[axes[1]]):
            return True
    return False


def _empty_sizes(value: ir.Value) -> list[ir.Value | None] | None:
    """The dynamic size operand of each dim of the ``tensor.empty`` behind ``value`` (through
    a ``linalg.fill``), None for static dims; None when it is not one."""
    fill = producer_named(value, "linalg.fill")
    if fill is not None:
        value = fill.operands[1]
    empty = producer_named(value, "tensor.empty")
    if empty is None:
        return None
    operands = iter(empty.operands)
    return [next(operands, None) if d is None else None for d in shaped_dims(empty.results[0])]


def _same_size(a: ir.Value | None, b: ir.Value | None) -> bool:
    """The same SSA size, or ``tensor.dim`` of the same tensor along the same axis."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    first, second = producer_named(a, "tensor.dim"), producer_named(b, "tensor.dim")
    if first is None or second is None or first.operands[0] != second.operands[0]:
        return False
    axis = scalar_constant(first.operands[1])
    return axis is not None and axis == scalar_constant(second.operands[1])


def _unique(ops: list[ir.Operation]) -> list[ir.Operation]:
    found: list[ir.Operation] = []
    for op in ops:
        if not any(op == seen for seen in found):
            found.append(op)
    return found
