"""tessera-fuse-proj: a torch Linear in high-level form becomes ``tessera.mma.proj``.

    collapse → linalg.matmul (transposed-B maps, zero f32 accumulator) → [truncf] → expand
      [→ addf(broadcast(bias))]                    ⇒  tessera.mma.proj(x, w[, bias]) {transpose_w}
    tessera.mma.proj → c·tanh(y / c)               ⇒  tessera.mma.proj {softcap = c}

The softcap is folded in a second sweep over projections, so it also folds into projections
that came from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.dialects import Projection
from tessera.pass_registry import NoOptions, register_pass

from .activation import softcap_value, unary_chain
from .linear_match import Linear, match_linear
from .match import (
    other_operand,
    producer_named,
    replace_and_sweep,
    rewrite_anchors,
    shape,
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
    rank = len(shape(output))
    dimensions = [int(d) for d in broadcast.attributes["dimensions"]]
    if len(shape(bias)) != 1 or dimensions != list(range(rank - 1)):
        return None
    if shape(value) != shape(output) or shape(bias)[0] != shape(output)[-1]:
        return None
    return bias, broadcast


def match_proj(matmul: ir.Operation) -> ProjMatch | None:
    """A Linear anchored at ``matmul``, with the bias add that follows it, if any."""
    linear = match_linear(matmul)
    if linear is None:
        return None
    add = single_user(linear.output)
    if add is not None and add.name == "arith.addf":
        other = other_operand(add, linear.output)
        found = _bias_vector(other, linear.output) if other is not None else None
        if found is not None:
            bias, broadcast = found
            return ProjMatch(linear, bias, add, (*linear.ops, broadcast, add))
    return ProjMatch(linear, None, linear.root, linear.ops)


def rewrite_proj(found: ProjMatch) -> None:
    root = found.root
    operands = [found.linear.x, found.linear.w]
    if found.bias is not None:
        operands.append(found.bias)
    with root.location, ir.InsertionPoint(root):
        fused = Projection.build(
            operands, [root.results[0].type], loc=root.location, transpose_w=True
        )
    replace_and_sweep(root, [fused.y], found.ops)


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
    root, proj = found.root, found.proj
    transpose = proj.attributes["transpose_w"] if "transpose_w" in proj.attributes else None
    with root.location, ir.InsertionPoint(root):
        fused = Projection.build(
            list(proj.operands),
            [root.results[0].type],
            loc=root.location,
            transpose_w=transpose,
            softcap=found.softcap,
        )
    replace_and_sweep(root, [fused.y], (*found.ops, proj))


@register_pass("tessera-fuse-proj")
def fuse_proj(module: ir.Operation, options: NoOptions) -> None:
    """Fuse each torch Linear in high-level form (collapse, linalg.matmul with the transposed-B
    maps and a zero f32 accumulator, optional truncf, expand back, optional bias add) into
    tessera.mma.proj {transpose_w = true}, then fold an output softcap c·tanh(y/c) that
    follows a projection into its softcap attribute."""
    rewrite_anchors(module, ["linalg.matmul"], match_proj, rewrite_proj)
    rewrite_anchors(module, ["tessera.mma.proj"], match_softcap, rewrite_softcap)
