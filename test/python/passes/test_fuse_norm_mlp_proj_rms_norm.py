"""tessera-fuse-rms-norm: the matcher, the rewrite, and the fused op's numerics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_fuse_norm_mlp_proj_ir import (
    Builder,
    Dim,
    assert_fusion_preserves,
    attr_float,
    block_arguments,
    first_op,
    only_op,
    op_names,
    parse,
    random_inputs,
    run,
)

from tessera.passes.fuse_rms_norm import match_rms_norm

PASS = "tessera-fuse-rms-norm"


def rms_norm_text(
    dims: Sequence[Dim],
    dtype: str,
    *,
    eps: float = 1e-6,
    offset: float | None = 1.0,
    square: str = "powf",
    mean: str = "divide",
    keepdim: bool = True,
    upcast: bool | None = None,
    weight_dtype: str | None = None,
    weight_first: bool = False,
    reduce_axis: int | None = None,
    width: int | None = None,
    accumulator: float = 0.0,
    also_return_rsqrt: bool = False,
) -> str:
    """x · rsqrt(mean(x²) + eps) · (offset + w) as a front end writes it; the keyword
    arguments pick the variant (or break the pattern for the negative tests)."""
    rank = len(dims)
    upcast = dtype != "f32" if upcast is None else upcast
    b = Builder("rms_norm")
    x = b.arg("x", dims, dtype)
    w = b.arg("w", [dims[-1]], weight_dtype or dtype)
    xc = b.op("arith.extf", x, dtype="f32") if upcast else x
    if square == "powf":
        squares = b.op("math.powf", xc, b.splat(2.0, dims, xc.dtype))
    else:
        squares = b.op("arith.mulf", xc, xc)
    axis = rank - 1 if reduce_axis is None else reduce_axis
    total = b.reduce_sum(squares, axis, accumulator)
    rows = total.dims
    groups = [[i] for i in range(rank - 2)] + [[rank - 2, rank - 1]]
    if keepdim:
        total = b.expand(total, groups, (*rows, 1))
    count = width or dims[-1]
    assert isinstance(count, int)
    if mean == "divide":
        averaged = b.op("arith.divf", total, b.splat(float(count), total.dims, xc.dtype))
    else:
        averaged = b.op("arith.mulf", b.splat(1.0 / count, total.dims, xc.dtype), total)
    shifted = b.op("arith.addf", averaged, b.splat(eps, total.dims, xc.dtype))
    inverse = b.op("math.rsqrt", shifted)
    rowwise = b.collapse(inverse, groups) if keepdim else inverse
    normalised = b.op("arith.mulf", xc, b.broadcast(rowwise, xc.dims, [rank - 1]))
    weight = b.op("arith.extf", w, dtype=xc.dtype) if w.dtype != xc.dtype else w
    if offset is not None:
        weight = b.op("arith.addf", b.splat(offset, weight.dims, xc.dtype, dense=True), weight)
    weight = b.broadcast(weight, xc.dims, list(range(rank - 1)))
    if weight_first:
        scaled = b.op("arith.mulf", weight, normalised)
    else:
        scaled = b.op("arith.mulf", normalised, weight)
    y = b.op("arith.truncf", scaled, dtype=dtype) if upcast else scaled
    return b.text(y, inverse) if also_return_rsqrt else b.text(y)


POSITIVE = [
    # (dims, dtype, keyword arguments)
    (["B", "S", 32], "f32", {}),
    (["B", "S", 32], "bf16", {"eps": 1e-6, "offset": 1.0}),  # Gemma
    ([2, 5, 48], "f32", {"offset": None, "square": "mulf", "mean": "reciprocal"}),
    (["B", "S", 4, 16], "bf16", {"keepdim": False, "weight_first": True}),  # QK-norm per head
    (["B", 4, "S", 16], "f32", {"eps": 1e-5, "square": "mulf"}),
    ([3, 24], "f16", {"offset": 0.5, "weight_dtype": "f32", "mean": "reciprocal"}),
]


@pytest.mark.parametrize(("dims", "dtype", "variant"), POSITIVE)
def test_rms_norm_is_fused(dims: list, dtype: str, variant: dict) -> None:
    text = rms_norm_text(dims, dtype, **variant)
    module = run(text, PASS)
    norm = only_op(module, "tessera.norm.rms")
    x, w = block_arguments(module)
    assert list(norm.operands) == [x, w]
    assert str(norm.results[0].type) == str(x.type)
    assert attr_float(norm, "eps") == pytest.approx(variant.get("eps", 1e-6), rel=1e-7)
    offset = variant.get("offset", 1.0)
    assert attr_float(norm, "offset") == (0.0 if offset is None else offset)
    # Nothing of the chain is left: the function is the fused op and its return.
    assert [n for n in op_names(module) if n not in ("builtin.module", "func.func")] == [
        "tessera.norm.rms",
        "func.return",
    ]


@pytest.mark.parametrize(("dims", "dtype", "variant"), POSITIVE)
def test_fused_rms_norm_computes_the_unfused_chain(dims: list, dtype: str, variant: dict) -> None:
    # A large eps makes a wrong eps visible in the numbers, not only in the attribute.
    text = rms_norm_text(dims, dtype, **{**variant, "eps": 0.3})
    inputs = random_inputs(text, sizes=(2, 3))
    assert_fusion_preserves(text, PASS, inputs, rtol=1e-6 if dtype == "f32" else 1e-2)


def test_matcher_reads_operands_and_attributes() -> None:
    module = parse(rms_norm_text(["B", "S", 32], "bf16", eps=1e-5, offset=1.0))
    found = match_rms_norm(first_op(module, "linalg.reduce"))
    assert found is not None
    x, w = block_arguments(module)
    assert found.x == x and found.w == w
    assert found.eps == pytest.approx(1e-5, rel=1e-7) and found.offset == 1.0
    assert found.root.name == "arith.truncf"


def test_matcher_refuses_a_reduce_that_is_not_a_sum_of_squares() -> None:
    b = Builder("sum")
    x = b.arg("x", [4, 8], "f32")
    module = parse(b.text(b.reduce_sum(x, 1)))
    assert match_rms_norm(first_op(module, "linalg.reduce")) is None


def test_upcast_whose_result_is_kept_wide_fuses_in_f32() -> None:
    """No truncf back: the fused op reads the extf'd x and returns f32."""
    b = Builder("rms_norm_wide")
    x = b.arg("x", ["B", 16], "bf16")
    w = b.arg("w", [16], "f32")
    xc = b.op("arith.extf", x, dtype="f32")
    squares = b.op("arith.mulf", xc, xc)
    total = b.reduce_sum(squares, 1)
    inverse = b.op(
        "math.rsqrt",
        b.op(
            "arith.addf",
            b.op("arith.divf", total, b.splat(16.0, total.dims, "f32")),
            b.splat(1e-6, total.dims, "f32"),
        ),
    )
    normalised = b.op("arith.mulf", b.broadcast(inverse, xc.dims, [1]), xc)
    y = b.op("arith.mulf", normalised, b.broadcast(w, xc.dims, [0]))
    module = run(b.text(y), PASS)
    norm = only_op(module, "tessera.norm.rms")
    assert norm.operands[0].owner.operation.name == "arith.extf"
    assert str(norm.results[0].type) == "tensor<?x16xf32>"
    assert attr_float(norm, "offset") == 0.0


NEGATIVE = {
    "reduction_over_another_axis": (["B", 8, 8], "f32", {"reduce_axis": 1, "keepdim": False}),
    "mean_over_another_width": (["B", "S", 32], "f32", {"width": 16}),
    "accumulator_is_not_zero": (["B", "S", 32], "f32", {"accumulator": 1.0}),
    "intermediate_has_another_user": (["B", "S", 32], "f32", {"also_return_rsqrt": True}),
    # bf16 arithmetic rounds at every step; the fused op computes in f32.
    "arithmetic_is_not_f32": (["B", "S", 32], "bf16", {"upcast": False}),
}


@pytest.mark.parametrize("reason", sorted(NEGATIVE))
def test_no_fusion(reason: str) -> None:
    dims, dtype, variant = NEGATIVE[reason]
    text = rms_norm_text(dims, dtype, **variant)
    before = str(parse(text))
    after = run(text, PASS)
    assert "tessera.norm.rms" not in str(after)
    assert str(after) == before
