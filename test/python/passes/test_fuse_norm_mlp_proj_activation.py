"""Recognising activations and softcaps by evaluation (passes/activation.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from mlir import ir
from test_fuse_norm_mlp_proj_ir import Builder, Val, first_op, parse

from tessera.passes.activation import (
    ACTIVATIONS,
    classify_activation,
    softcap_value,
    unary_chain,
)

Writer = Callable[[Builder, Val], Val]
K = math.sqrt(2.0 / math.pi)


def _splat(b: Builder, x: Val, number: float) -> Val:
    return b.splat(number, x.dims, x.dtype)


def gelu_tanh_textbook(b: Builder, x: Val) -> Val:
    """0.5·x·(1 + tanh(k·(x + 0.044715·x³))), x³ as x·x·x."""
    cube = b.op("arith.mulf", b.op("arith.mulf", x, x), x)
    inner = b.op("arith.addf", x, b.op("arith.mulf", cube, _splat(b, x, 0.044715)))
    t = b.op("math.tanh", b.op("arith.mulf", inner, _splat(b, x, K)))
    half_x = b.op("arith.mulf", x, _splat(b, x, 0.5))
    return b.op("arith.mulf", half_x, b.op("arith.addf", t, _splat(b, x, 1.0)))


def gelu_tanh_reordered(b: Builder, x: Val) -> Val:
    """x·(0.5 + 0.5·tanh(k·x + k·0.044715·powf(x, 3))), constants on the left."""
    cube = b.op("math.powf", x, _splat(b, x, 3.0))
    inner = b.op(
        "arith.addf",
        b.op("arith.mulf", _splat(b, x, K), x),
        b.op("arith.mulf", _splat(b, x, K * 0.044715), cube),
    )
    t = b.op("math.tanh", inner)
    half = b.op("arith.addf", _splat(b, x, 0.5), b.op("arith.mulf", _splat(b, x, 0.5), t))
    return b.op("arith.mulf", x, half)


def gelu_erf(b: Builder, x: Val) -> Val:
    """0.5·x·(1 + erf(x / √2))."""
    e = b.op("math.erf", b.op("arith.divf", x, _splat(b, x, math.sqrt(2.0))))
    one_plus = b.op("arith.addf", _splat(b, x, 1.0), e)
    return b.op("arith.mulf", b.op("arith.mulf", _splat(b, x, 0.5), x), one_plus)


def gelu_erf_reciprocal(b: Builder, x: Val) -> Val:
    """x·0.5·(erf(x·(1/√2)) + 1)."""
    e = b.op("math.erf", b.op("arith.mulf", x, _splat(b, x, 1.0 / math.sqrt(2.0))))
    one_plus = b.op("arith.addf", e, _splat(b, x, 1.0))
    return b.op("arith.mulf", x, b.op("arith.mulf", one_plus, _splat(b, x, 0.5)))


def silu_division(b: Builder, x: Val) -> Val:
    """x / (1 + exp(-x))."""
    denominator = b.op("arith.addf", _splat(b, x, 1.0), b.op("math.exp", b.op("arith.negf", x)))
    return b.op("arith.divf", x, denominator)


def silu_sigmoid(b: Builder, x: Val) -> Val:
    """x · (1 / (1 + exp(0 - x)))."""
    minus = b.op("arith.subf", _splat(b, x, 0.0), x)
    denominator = b.op("arith.addf", b.op("math.exp", minus), _splat(b, x, 1.0))
    return b.op("arith.mulf", x, b.op("arith.divf", _splat(b, x, 1.0), denominator))


WRITERS: dict[str, list[Writer]] = {
    "gelu_tanh": [gelu_tanh_textbook, gelu_tanh_reordered],
    "gelu": [gelu_erf, gelu_erf_reciprocal],
    "silu": [silu_division, silu_sigmoid],
}
ALL_WRITERS = [(name, writer) for name, writers in WRITERS.items() for writer in writers]


def chain_text(writer: Writer, dtype: str, upcast: bool = False) -> str:
    """A function returning writer(x); with ``upcast``, computed in f32 between casts."""
    b = Builder("act")
    x = b.arg("x", ["B", 16], dtype)
    inner = b.op("arith.extf", x, dtype="f32") if upcast else x
    y = writer(b, inner)
    if upcast:
        y = b.op("arith.truncf", y, dtype=dtype)
    return b.text(y)


def returned_and_argument(module: ir.Module) -> tuple[ir.Value, ir.Value]:
    func = first_op(module, "func.func")
    block = func.regions[0].blocks[0]
    terminator = [o.operation for o in block.operations][-1]
    return terminator.operands[0], block.arguments[0]


def classify_text(text: str) -> str | None:
    module = parse(text)  # owns the IR: keep it alive while its values are used
    root, leaf = returned_and_argument(module)
    chain = unary_chain(root)
    assert chain is not None and chain.leaf == leaf
    return classify_activation(chain)


@pytest.mark.parametrize(
    ("expected", "writer"), ALL_WRITERS, ids=lambda v: getattr(v, "__name__", v)
)
@pytest.mark.parametrize(("dtype", "upcast"), [("f32", False), ("bf16", True), ("bf16", False)])
def test_activation_is_recognised_whatever_the_op_order(
    expected: str, writer: Writer, dtype: str, upcast: bool
) -> None:
    assert classify_text(chain_text(writer, dtype, upcast)) == expected


def test_precision_is_the_narrowest_arithmetic_type() -> None:
    for upcast, expected in ((True, "f32"), (False, "bf16")):
        module = parse(chain_text(silu_division, "bf16", upcast))
        root, _ = returned_and_argument(module)
        chain = unary_chain(root)
        assert chain is not None and chain.precision == expected


def test_references_match_torch() -> None:
    import torch

    x = torch.linspace(-4, 4, 33, dtype=torch.float64)
    functional = torch.nn.functional
    expected = {
        "gelu_tanh": functional.gelu(x, approximate="tanh"),
        "gelu": functional.gelu(x),
        "silu": functional.silu(x),
    }
    for name, reference in ACTIVATIONS.items():
        found = torch.tensor([reference(float(v)) for v in x], dtype=torch.float64)
        torch.testing.assert_close(found, expected[name], rtol=1e-12, atol=1e-12)


def _gelu_with_wrong_half(b: Builder, x: Val) -> Val:
    e = b.op("math.erf", b.op("arith.divf", x, _splat(b, x, math.sqrt(2.0))))
    one_plus = b.op("arith.addf", _splat(b, x, 1.0), e)
    return b.op("arith.mulf", b.op("arith.mulf", _splat(b, x, 0.51), x), one_plus)


def _relu(b: Builder, x: Val) -> Val:
    return b.op("arith.maximumf", x, _splat(b, x, 0.0))


def _tanh(b: Builder, x: Val) -> Val:
    return b.op("math.tanh", x)


def _gelu_tanh_with_erf_constant(b: Builder, x: Val) -> Val:
    """tanh-GELU's shape with 1/√2 where √(2/π) belongs: close to neither."""
    cube = b.op("arith.mulf", b.op("arith.mulf", x, x), x)
    inner = b.op("arith.addf", x, b.op("arith.mulf", cube, _splat(b, x, 0.044715)))
    t = b.op("math.tanh", b.op("arith.mulf", inner, _splat(b, x, 1 / math.sqrt(2.0))))
    half_x = b.op("arith.mulf", x, _splat(b, x, 0.5))
    return b.op("arith.mulf", half_x, b.op("arith.addf", t, _splat(b, x, 1.0)))


@pytest.mark.parametrize(
    "writer", [_gelu_with_wrong_half, _relu, _tanh, _gelu_tanh_with_erf_constant]
)
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_unknown_activation_is_not_classified(writer: Writer, dtype: str) -> None:
    assert classify_text(chain_text(writer, dtype)) is None


def test_chain_with_two_inputs_is_not_unary() -> None:
    b = Builder("two")
    x = b.arg("x", [4], "f32")
    y = b.arg("y", [4], "f32")
    module = parse(b.text(b.op("math.tanh", b.op("arith.addf", x, y))))
    root, _ = returned_and_argument(module)
    assert unary_chain(root) is None


def test_chain_whose_intermediate_has_another_user_is_refused() -> None:
    b = Builder("shared")
    x = b.arg("x", [4], "f32")
    shared = b.op("math.exp", b.op("arith.negf", x))
    denominator = b.op("arith.addf", _splat(b, x, 1.0), shared)
    root_val = b.op("arith.divf", x, denominator)
    module = parse(b.text(root_val, shared))
    func = first_op(module, "func.func")
    terminator = [o.operation for o in func.regions[0].blocks[0].operations][-1]
    assert unary_chain(terminator.operands[0]) is None


def test_stop_makes_a_leaf() -> None:
    b = Builder("stop")
    x = b.arg("x", [4], "f32")
    inner = b.op("math.exp", x)
    module = parse(b.text(silu_division(b, inner)))
    root, argument = returned_and_argument(module)
    exp_value = next(
        op.results[0] for op in [first_op(module, "math.exp")] if op.operands[0] == argument
    )
    chain = unary_chain(root, stop=lambda v: v == exp_value)
    assert chain is not None and chain.leaf == exp_value
    assert classify_activation(chain) == "silu"


def softcap_text(cap: float, dtype: str, reciprocal: bool, outer: float | None = None) -> str:
    b = Builder("softcap")
    y = b.arg("y", ["B", 8], dtype)
    if reciprocal:
        scaled = b.op("arith.mulf", y, b.splat(1.0 / cap, y.dims, dtype))
    else:
        scaled = b.op("arith.divf", y, b.splat(cap, y.dims, dtype))
    capped = b.op("math.tanh", scaled)
    return b.text(b.op("arith.mulf", b.splat(outer or cap, y.dims, dtype), capped))


@pytest.mark.parametrize("cap", [30.0, 50.0, 0.75])
@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_softcap_value_is_read_off_the_function(cap: float, reciprocal: bool, dtype: str) -> None:
    module = parse(softcap_text(cap, dtype, reciprocal))
    root, _ = returned_and_argument(module)
    chain = unary_chain(root)
    assert chain is not None
    assert softcap_value(chain) == pytest.approx(cap, rel=1e-6)


def test_mismatched_softcap_constants_are_not_a_softcap() -> None:
    module = parse(softcap_text(30.0, "f32", False, outer=25.0))
    root, _ = returned_and_argument(module)
    chain = unary_chain(root)
    assert chain is not None and softcap_value(chain) is None


def test_tanh_alone_is_not_a_softcap_of_another_width() -> None:
    b = Builder("t")
    y = b.arg("y", [8], "f32")
    module = parse(b.text(b.op("math.exp", y)))
    root, _ = returned_and_argument(module)
    chain = unary_chain(root)
    assert chain is not None and softcap_value(chain) is None
