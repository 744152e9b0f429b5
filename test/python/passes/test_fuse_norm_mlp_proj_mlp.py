"""tessera-fuse-gated-mlp: the matcher, the rewrite, and the fused op's numerics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_fuse_norm_mlp_proj_activation import (
    Writer,
    gelu_erf_reciprocal,
    gelu_tanh_reordered,
    gelu_tanh_textbook,
    silu_division,
    silu_sigmoid,
)
from test_fuse_norm_mlp_proj_ir import (
    Builder,
    Dim,
    assert_fusion_preserves,
    attr_str,
    block_arguments,
    first_op,
    only_op,
    op_names,
    ops_named,
    parse,
    random_inputs,
    run,
)

from tessera.passes.fuse_gated_mlp import match_gated_mlp

PASS = "tessera-fuse-gated-mlp"


def mlp_text(
    x_dims: Sequence[Dim],
    dtype: str,
    hidden: int = 32,
    *,
    activation: Writer = gelu_tanh_textbook,
    upcast: bool | None = None,
    swap: bool = False,
    up_reads_other_input: bool = False,
    gate_is_up: bool = False,
    also_return_gate: bool = False,
) -> str:
    """down(act(gate(x)) · up(x)) with each projection a torch Linear in high-level form."""
    upcast = dtype != "f32" if upcast is None else upcast
    width = x_dims[-1]
    b = Builder("mlp")
    x = b.arg("x", x_dims, dtype)
    w_gate = b.arg("w_gate", [hidden, width], dtype)
    w_up = b.arg("w_up", [hidden, width], dtype)
    w_down = b.arg("w_down", [width, hidden], dtype)
    other = b.arg("other", x_dims, dtype) if up_reads_other_input else x
    gate = b.linear(x, w_gate)
    up = gate if gate_is_up else b.linear(other, w_up)
    inner = b.op("arith.extf", gate, dtype="f32") if upcast else gate
    activated = activation(b, inner)
    if upcast:
        activated = b.op("arith.truncf", activated, dtype=dtype)
    product = b.op("arith.mulf", up, activated) if swap else b.op("arith.mulf", activated, up)
    y = b.linear(product, w_down)
    return b.text(y, gate) if also_return_gate else b.text(y)


POSITIVE = [
    # (x dims, dtype, expected activation, keyword arguments)
    (["B", "S", 16], "bf16", "gelu_tanh", {}),  # Gemma
    (["B", "S", 16], "f32", "gelu_tanh", {"activation": gelu_tanh_reordered, "swap": True}),
    ([6, 16], "f32", "silu", {"activation": silu_division}),
    (["B", "S", 16], "bf16", "silu", {"activation": silu_sigmoid, "upcast": False}),
    ([2, 3, 16], "f32", "gelu", {"activation": gelu_erf_reciprocal, "hidden": 24}),
]


@pytest.mark.parametrize(("dims", "dtype", "expected", "variant"), POSITIVE)
def test_gated_mlp_is_fused(dims: list, dtype: str, expected: str, variant: dict) -> None:
    module = run(mlp_text(dims, dtype, **variant), PASS)
    mlp = only_op(module, "tessera.mlp.swi_glu")
    assert list(mlp.operands) == block_arguments(module)  # x, w_gate, w_up, w_down
    assert attr_str(mlp, "activation") == expected
    assert [n for n in op_names(module) if n not in ("builtin.module", "func.func")] == [
        "tessera.mlp.swi_glu",
        "func.return",
    ]


@pytest.mark.parametrize(("dims", "dtype", "expected", "variant"), POSITIVE)
def test_fused_mlp_computes_the_unfused_chain(
    dims: list, dtype: str, expected: str, variant: dict
) -> None:
    text = mlp_text(dims, dtype, **variant)
    inputs = random_inputs(text, sizes=(2, 3))
    assert_fusion_preserves(text, PASS, inputs, rtol=1e-6 if dtype == "f32" else 2e-2)


@pytest.mark.parametrize("order", ["tessera-fuse-proj, " + PASS, PASS + ", tessera-fuse-proj"])
def test_gated_mlp_fuses_before_or_after_proj(order: str) -> None:
    module = run(mlp_text(["B", "S", 16], "bf16"), order)
    mlp = only_op(module, "tessera.mlp.swi_glu")
    assert list(mlp.operands) == block_arguments(module)
    assert not ops_named(module, "tessera.mma.proj")


def test_matcher_reads_the_weights_in_order() -> None:
    module = parse(mlp_text(["B", "S", 16], "f32", swap=True))
    x, w_gate, w_up, w_down = block_arguments(module)
    down = ops_named(module, "linalg.matmul")[-1]
    found = match_gated_mlp(down)
    assert found is not None
    assert (found.x, found.w_gate, found.w_up, found.w_down) == (x, w_gate, w_up, w_down)
    assert found.activation == "gelu_tanh"
    assert match_gated_mlp(first_op(module, "linalg.matmul")) is None  # gate is no down


NEGATIVE = {
    "gate_and_up_read_different_inputs": {"up_reads_other_input": True},
    "activation_is_unknown": {"activation": lambda b, x: b.op("math.tanh", x)},
    "gate_output_has_another_user": {"also_return_gate": True},
    "gate_and_up_are_one_projection": {"gate_is_up": True},
}


@pytest.mark.parametrize("reason", sorted(NEGATIVE))
def test_no_fusion(reason: str) -> None:
    text = mlp_text(["B", "S", 16], "f32", **NEGATIVE[reason])
    before = str(parse(text))
    assert str(run(text, PASS)) == before
