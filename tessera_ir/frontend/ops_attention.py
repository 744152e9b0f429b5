"""``aten.scaled_dot_product_attention`` written out as the chain the attention fusion reads:

    scores = batch_matmul(q, transpose(k))      (f32 accumulator, kept in f32)
    scores = scores × scale
    scores = select(mask, scores, lowest)  |  scores + mask  |  select(causal, scores, lowest)
    probs  = softmax(scores) in f32, truncf to q's dtype
    out    = batch_matmul(probs, v)              (f32 accumulator, truncf)

Keeping the scores in f32 until the softmax follows torch's fused CPU/GPU kernels for bf16.
Grouped-query k/v (``enable_gqa``) are expanded by a ``linalg.broadcast`` over a new head axis
and a ``collapse_shape``, the form transformers' ``repeat_kv`` produces in eager attention.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import fx

from . import layout
from . import sym_algebra as alg
from .emitter import Emitter
from .node_args import argument, optional_number_arg
from .ops_elementwise import arithmetic
from .ops_linalg import batched_matmul, softmax_in
from .registry import translates
from .term_writer import TermWriter
from .terms import Sym, index_symbol
from .types import lowest
from .values import Scalar, TVal

if TYPE_CHECKING:
    from .translator import Translator

aten = torch.ops.aten


def repeat_heads(em: Emitter, x: TVal, heads: int) -> TVal:
    """[B, Hkv, T, D] → [B, heads, T, D], each kv head repeated heads/Hkv times in a row."""
    batch, kv_heads, length, dim = x.shape
    if kv_heads == heads:
        return x
    if heads % kv_heads:
        em.unsupported(f"{heads} query heads are not a multiple of {kv_heads} kv heads")
    groups = heads // kv_heads
    with_axis = layout.reshape(em, x, (batch, kv_heads, 1, length, dim))
    spread = layout.broadcast_to(em, with_axis, (batch, kv_heads, groups, length, dim))
    return layout.reshape(em, spread, (batch, heads, length, dim))


@translates(aten.scaled_dot_product_attention.default)
def scaled_dot_product_attention(t: Translator, node: fx.Node) -> TVal:
    em = t.em
    q, k, v = (t.arg(a) for a in node.args[:3])
    mask = argument(node, 3, "attn_mask")
    if argument(node, 4, "dropout_p", 0.0):
        em.unsupported("attention dropout (call model.eval() before tracing)")
    is_causal = bool(argument(node, 5, "is_causal", False))
    scale = optional_number_arg(em, node, 6, "scale")
    if len(q.shape) != 4 or len(k.shape) != 4 or len(v.shape) != 4:
        em.unsupported("attention needs 4-D [batch, heads, seq, head_dim] q, k, v")
    if not all(isinstance(x.shape[1], int) for x in (q, k, v)):
        em.unsupported("attention needs a static number of heads")
    k, v = repeat_heads(em, k, q.shape[1]), repeat_heads(em, v, q.shape[1])

    scores = batched_matmul(em, q, layout.transpose(em, k, [0, 1, 3, 2]))
    shape, compute = scores.shape, scores.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = arithmetic(em, "mul", scores, Scalar(float(scale)), shape, compute)
    if mask is not None:
        allowed = t.arg(mask)
        if allowed.dtype == torch.bool:
            scores = em.select(
                em.tensor(allowed, shape, torch.bool),
                scores,
                em.splat(lowest(compute), shape, compute),
            )
        else:
            scores = em.binary("arith.addf", scores, em.tensor(allowed, shape, compute))
    if is_causal:
        # torch's is_causal keeps key ≤ query, counted from the start of both.
        allowed = alg.relation("le", index_symbol(1), index_symbol(0))
        causal = TermWriter(em).term(Sym(allowed, torch.bool), shape[-2:])
        scores = em.select(
            em.tensor(causal, shape, torch.bool), scores, em.splat(lowest(compute), shape, compute)
        )
    probs = em.cast(softmax_in(em, scores, 3, compute), q.dtype)
    return em.cast(batched_matmul(em, probs, v), t.dtype(node))
