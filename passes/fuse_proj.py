"""tessera-fuse-proj: a torch Linear in high-level form becomes ``tessera.mma.proj``.

    collapse → linalg.matmul (transposed-B maps, zero f32 accumulator) → [truncf] → expand
      [→ addf(broadcast(bias))]                    ⇒  tessera.mma.proj(x, w[, bias]) {transpose_w}
    … → expand [M, N] → [B, S, H, D]               ⇒  tessera.mma.proj(x, w) [B, S, N]
                                                        → expand [B, S, N] → [B, S, H, D]
    tessera.mma.proj → c·tanh(y / c)               ⇒  tessera.mma.proj {softcap = c}

The second form is what canonicalize leaves of a q/k/v projection followed by the view into
heads: the two expands merged into one. The projection keeps x's leading dims and the split
into heads is put back as its own expand, which is what the fused ops after it read.

The softcap is folded in a second sweep over projections, so it also folds into projections
that came from elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import tensor

from tessera.dialects import Projection
from tessera.ir_types import shaped_dims
from tessera.pass_registry import NoOptions, register_pass

from .activation import softcap_value, unary_chain
from .linear_match import Linear, match_linear
from .match import (
    other_operand,
    producer_named,
    replace_and_sweep,
    replace_with_op,
    rewrite_anchors,
    single_user,
    users,
)

# How far past a projection the softcap's last op may be (divide, tanh, multiply, with room
# for a front end that spells the scaling in two steps).
_SOFTCAP_MAX_OPS = 6


@dataclass(frozen=True)
class ProjMatch:
    linear: Linear
    bias: ir.Value | None
    root: ir.Operation
    ops: tuple[ir.Operation, ...]


def _bias_vector(value: ir.Value, output: ir.Value) -> tuple[ir.Value, ir.Operation] | None:
    """(bias, broadcast) when ``value`` broadcasts a [N] vector over output's leading dims."""
    broadcast = producer_named(value, "linalg.broadcast")
    if broadcast is None or len(users(value)) != 1:
        return None
    bias = broadcast.operands[0]
    rank = len(shaped_dims(output))
    dimensions = list(ir.DenseI64ArrayAttr(broadcast.attributes["dimensions"]))
    if len(shaped_dims(bias)) != 1 or dimensions != list(range(rank - 1)):
        return None
    if shaped_dims(value) != shaped_dims(output) or shaped_dims(bias)[0] != shaped_dims(output)[-1]:
        return None
    return bias, broadcast


def match_proj(matmul: ir.Operation) -> ProjMatch | None:
    """A Linear anchored at ``matmul``, with the bias add that follows it, if any.

    The Linear may end in an expand that also splits N into heads; a bias added after that
    split is per head dim, not the Linear's [N] bias, and is left alone."""
    linear = match_linear(matmul, split=True)
    if linear is None:
        return None
    if linear.split:
        return ProjMatch(linear, None, linear.root, linear.ops)
    add = single_user(linear.output)
    if add is not None and add.name == "arith.addf":
        other = other_operand(add, linear.output)
        found = _bias_vector(other, linear.output) if other is not None else None
        if found is not None:
            bias, broadcast = found
            return ProjMatch(linear, bias, add, (*linear.ops, broadcast, add))
    return ProjMatch(linear, None, linear.root, linear.ops)


def _unsplit_type(linear: Linear) -> ir.RankedTensorType:
    """[..., N] for a Linear whose output is [..., *split]: x's leading dims, then N."""
    output = ir.ShapedType(linear.output.type)
    dynamic = ir.ShapedType.get_dynamic_size()
    leading = [dynamic if d is None else d for d in shaped_dims(linear.x)[:-1]]
    return ir.RankedTensorType.get([*leading, math.prod(linear.split)], output.element_type)


def _split_again(value: ir.Value, expand: ir.Operation) -> ir.Value:
    """``value`` [..., N] with N split into the trailing dims of ``expand`` (the Linear's
    merged expand back, [M, N] → [..., *split]); the leading dims stay one for one and the
    output sizes are ``expand``'s own."""
    lead = len(shaped_dims(value)) - 1
    rank = len(shaped_dims(expand.results[0]))
    groups = [[i] for i in range(lead)] + [list(range(lead, rank))]
    static = list(ir.DenseI64ArrayAttr(expand.attributes["static_output_shape"]))
    return tensor.expand_shape(
        expand.results[0].type, value, groups, list(expand.operands[1:]), static
    )


def rewrite_proj(found: ProjMatch) -> None:
    root, linear = found.root, found.linear
    operands = [linear.x, linear.w]
    if found.bias is not None:
        operands.append(found.bias)
    with root.location, ir.InsertionPoint(root):
        result_type = _unsplit_type(linear) if linear.split else root.results[0].type
        fused = Projection.build(operands, [result_type], loc=root.location, transpose_w=True)
        replacement = _split_again(fused.y, root) if linear.split else fused.y
    replace_and_sweep(root, [replacement], found.ops)


@dataclass(frozen=True)
class SoftcapMatch:
    proj: ir.Operation
    root: ir.Operation
    softcap: float
    ops: tuple[ir.Operation, ...]


def match_softcap(proj: ir.Operation) -> SoftcapMatch | None:
    """A ``c·tanh(y / c)`` chain on the single use of a projection without softcap.

    The chain must keep y's type (a cast inside it would round where the fused op does not)."""
    if proj.name != "tessera.mma.proj" or "softcap" in proj.attributes:
        return None
    y = proj.results[0]
    current = y
    for _ in range(_SOFTCAP_MAX_OPS):
        following = users(current)
        if len(following) != 1 or len(following[0].results) != 1:
            return None
        current = following[0].results[0]
        if str(current.type) != str(y.type):
            return None
        chain = unary_chain(current, stop=lambda value: value == y)
        if chain is None or chain.leaf != y or chain.has_casts:
            return None
        if len(users(y)) != 1 or users(y)[0] not in chain.ops:
            return None
        cap = softcap_value(chain)
        if cap is not None:
            return SoftcapMatch(proj, following[0], cap, chain.ops)
    return None


def rewrite_softcap(found: SoftcapMatch) -> None:
    proj = found.proj
    transpose = proj.attributes["transpose_w"] if "transpose_w" in proj.attributes else None
    replace_with_op(
        found.root,
        Projection,
        list(proj.operands),
        (*found.ops, proj),
        transpose_w=transpose,
        softcap=found.softcap,
    )


@register_pass("tessera-fuse-proj")
def fuse_proj(module: ir.Operation, options: NoOptions) -> None:
    """Fuse each torch Linear in high-level form (collapse, linalg.matmul with the transposed-B
    maps and a zero f32 accumulator, optional truncf, expand back, optional bias add) into
    tessera.mma.proj {transpose_w = true}, then fold an output softcap c·tanh(y/c) that
    follows a projection into its softcap attribute. An expand back that canonicalize merged
    with a split into heads ([B·S, N] → [B, S, H, D]) becomes the projection to [B, S, N]
    and an expand [B, S, N] → [B, S, H, D]."""
    rewrite_anchors(module, ["linalg.matmul"], match_proj, rewrite_proj)
    rewrite_anchors(module, ["tessera.mma.proj"], match_softcap, rewrite_softcap)
