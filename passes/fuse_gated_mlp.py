"""tessera-fuse-gated-mlp: ``down(act(gate(x)) ⊙ up(x))`` becomes ``tessera.mlp.swi_glu``.

Each projection is a Linear in high-level form or a ``tessera.mma.proj {transpose_w = true}``
(``linear_match``), so the pass works before or after tessera-fuse-proj. The activation is
recognised by evaluating the elementwise chain from gate's output to the product
(``activation.classify_activation``), whatever op order the front end chose.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.dialects import GatedMlp
from tessera.ir_types import element_type
from tessera.pass_registry import NoOptions, register_pass

from .activation import classify_activation, unary_chain
from .linear_match import Linear, linear_at, linear_output
from .match import producer_named, replace_with_op, rewrite_anchors, used_only_by, users


@dataclass(frozen=True)
class GatedMlpMatch:
    x: ir.Value
    w_gate: ir.Value
    w_up: ir.Value
    w_down: ir.Value
    activation: str
    root: ir.Operation
    ops: tuple[ir.Operation, ...]


def _is_linear_output(value: ir.Value) -> bool:
    return linear_output(value) is not None


def _reads_only(value: ir.Value, linear: Linear) -> bool:
    """``value`` (the Linear's x) is read by the Linear alone, through a private collapse."""
    if users(value) != [linear.reader]:
        return False
    return linear.collapse is None or users(linear.collapse.results[0]) == [linear.ops[0]]


def _gated_product(
    product: ir.Operation,
) -> tuple[Linear, Linear, str, tuple[ir.Operation, ...]] | None:
    """(gate, up, activation, activation ops) for ``act(gate(x)) · up(x)`` in either operand
    order."""
    lhs, rhs = product.operands
    if lhs == rhs:
        return None
    for gated, plain in ((lhs, rhs), (rhs, lhs)):
        up = linear_output(plain)
        if up is None or users(plain) != [product] or users(gated) != [product]:
            continue
        chain = unary_chain(gated, stop=_is_linear_output)
        if chain is None:
            continue
        gate = linear_output(chain.leaf)
        if gate is None or gate.ops[0] == up.ops[0] or gate.x != up.x:
            continue
        if not used_only_by(chain.leaf, chain.ops):
            continue
        activation = classify_activation(chain)
        if activation is not None:
            return gate, up, activation, chain.ops
    return None


def match_gated_mlp(anchor: ir.Operation) -> GatedMlpMatch | None:
    """The gated MLP whose down projection is anchored at ``anchor`` (a linalg.matmul or a
    tessera.mma.proj), or None."""
    down = linear_at(anchor)
    if down is None:
        return None
    product = producer_named(down.x, "arith.mulf")
    if product is None or not _reads_only(down.x, down):
        return None
    found = _gated_product(product)
    if found is None:
        return None
    gate, up, activation, activation_ops = found
    x = gate.x
    # The fused op rounds the product and the result as x; a chain that keeps another dtype
    # in between is not what it computes.
    if element_type(down.x) != element_type(x) or str(down.output.type) != str(x.type):
        return None
    ops = (*down.ops, product, *activation_ops, *gate.ops, *up.ops)
    if down.collapse is not None:
        ops = (down.collapse, *ops)
    return GatedMlpMatch(x, gate.w, up.w, down.w, activation, down.root, ops)


def rewrite_gated_mlp(found: GatedMlpMatch) -> None:
    replace_with_op(
        found.root,
        GatedMlp,
        [found.x, found.w_gate, found.w_up, found.w_down],
        found.ops,
        activation=found.activation,
    )


@register_pass("tessera-fuse-gated-mlp")
def fuse_gated_mlp(module: ir.Operation, options: NoOptions) -> None:
    """Fuse down(act(gate(x)) * up(x)) into tessera.mlp.swi_glu {activation}, where gate, up
    and down are torch Linears in high-level form or tessera.mma.proj {transpose_w = true}
    ops, gate and up read the same x, and act is tanh-GELU, erf-GELU or SiLU (recognised by
    evaluating the elementwise chain, in any op order)."""
    rewrite_anchors(
        module, ["linalg.matmul", "tessera.mma.proj"], match_gated_mlp, rewrite_gated_mlp
    )
