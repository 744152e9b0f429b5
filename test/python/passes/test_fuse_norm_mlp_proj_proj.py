"""tessera-fuse-proj: Linear matching, bias and softcap folding, and the fused op's numerics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_fuse_norm_mlp_proj_ir import (
    Builder,
    Dim,
    Val,
    assert_fusion_preserves,
    attr_float,
    block_arguments,
    first_op,
    only_op,
    ops_named,
    parse,
    random_inputs,
    run,
)

from tessera.passes.fuse_proj import match_proj
from tessera.passes.linear_match import linear_output, match_linear
from tessera.pipeline import run_pipeline

PASS = "tessera-fuse-proj"


def softcap(
    b: Builder, y: Val, cap: float, form: str = "divide", outer: float | None = None
) -> Val:
    if form == "divide":
        scaled = b.op("arith.divf", y, b.splat(cap, y.dims, y.dtype))
    else:
        scaled = b.op("arith.mulf", b.splat(1.0 / cap, y.dims, y.dtype), y)
    return b.op("arith.mulf", b.op("math.tanh", scaled), b.splat(outer or cap, y.dims, y.dtype))


def proj_text(
    x_dims: Sequence[Dim],
    dtype: str,
    n: int = 24,
    *,
    out_dtype: str | None = None,
    bias: bool = False,
    cap: float | None = None,
    cap_form: str = "divide",
    cap_outer: float | None = None,
    accumulator: float = 0.0,
    accumulator_dtype: str = "f32",
    transposed: bool = True,
    also_return: str | None = None,
    heads: Sequence[int] = (),
    expand_as: tuple[list[list[int]], Sequence[Dim]] | None = None,
) -> str:
    """y = x·wᵀ (+ bias) [softcap] as a front end writes a torch Linear; the keyword arguments
    pick the variant or break the pattern (``also_return`` gives an intermediate a second
    user: "truncf" or "proj"). ``heads`` splits N into these dims in the expand back, as
    canonicalize leaves a projection followed by the view into heads; ``expand_as`` replaces
    the expand back by one with other (groups, dims)."""
    rank = len(x_dims)
    b = Builder("proj")
    x = b.arg("x", x_dims, dtype)
    w = b.arg("w", [n, x_dims[-1]] if transposed else [x_dims[-1], n], dtype)
    bias_arg = b.arg("bias", [n], out_dtype or dtype) if bias else None
    groups = [list(range(rank - 1)), [rank - 1]]
    flat = b.collapse(x, groups) if rank > 2 else x
    init = b.splat(accumulator, (flat.dims[0], n), accumulator_dtype)
    product = Val(b.fresh("mm"), (flat.dims[0], n), accumulator_dtype)
    maps = (
        "indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, "
        "affine_map<(m, n, k) -> (m, n)>] "
        if transposed
        else ""
    )
    b.emit(
        f"{product.name} = linalg.matmul {maps}ins({flat.name}, {w.name} : {flat.type}, "
        f"{w.type}) outs({init.name} : {init.type}) -> {product.type}"
    )
    y = product
    target = out_dtype or dtype
    truncated = None
    if target != accumulator_dtype:
        y = truncated = b.op("arith.truncf", y, dtype=target)
    if expand_as is not None:
        y = b.expand(y, *expand_as)
    elif heads:
        y = b.expand(
            y, [groups[0], list(range(rank - 1, rank - 1 + len(heads)))], (*x_dims[:-1], *heads)
        )
    elif rank > 2:
        y = b.expand(y, groups, (*x_dims[:-1], n))
    if bias_arg is not None:
        y = b.op("arith.addf", y, b.broadcast(bias_arg, y.dims, list(range(rank - 1))))
    linear = y
    if cap is not None:
        y = softcap(b, y, cap, cap_form, cap_outer)
    if also_return == "truncf" and truncated is not None:
        return b.text(y, truncated)
    if also_return == "proj":
        return b.text(y, linear)
    return b.text(y)


POSITIVE = [
    # (x dims, dtype, keyword arguments)
    (["B", "S", 64], "f32", {}),
    (["B", "S", 64], "bf16", {}),
    ([6, 64], "f32", {"n": 40}),
    (["B", "S", 4, 16], "bf16", {"n": 8}),
    (["B", "S", 64], "bf16", {"bias": True}),
    ([3, 64], "f32", {"bias": True}),
    (["B", "S", 64], "bf16", {"out_dtype": "f32"}),  # f32 logits from bf16
    (["B", "S", 64], "f32", {"cap": 30.0}),  # Gemma 2's final logits
    (["B", "S", 64], "bf16", {"cap": 30.0, "cap_form": "reciprocal"}),
    ([5, 64], "f32", {"cap": 50.0, "bias": True}),
    # q/k/v projections whose expand back canonicalize merged with the view into heads
    (["B", "S", 64], "f32", {"heads": (4, 6)}),
    (["B", "S", 64], "bf16", {"heads": (4, 6)}),
    ([2, 3, 64], "bf16", {"heads": (2, 3, 4)}),
    (["B", "S", 4, 16], "f32", {"n": 8, "heads": (2, 4)}),
    # a single kv head: canonicalize gives the unit head dim to the rows
    (["B", "S", 48], "bf16", {"n": 16, "expand_as": ([[0, 1, 2], [3]], ("B", "S", 1, 16))}),
    # a unit sequence dim on the other side of the cut; N is not split
    ([2, 1, 32], "f32", {"n": 16, "expand_as": ([[0], [1, 2]], (2, 1, 16))}),
]


@pytest.mark.parametrize(("dims", "dtype", "variant"), POSITIVE)
def test_linear_is_fused(dims: list, dtype: str, variant: dict) -> None:
    module = run(proj_text(dims, dtype, **variant), PASS)
    proj = only_op(module, "tessera.mma.proj")
    arguments = block_arguments(module)
    assert list(proj.operands) == arguments  # x, w[, bias], in that order
    assert bool(proj.attributes["transpose_w"].value) is True
    if "cap" in variant:
        assert attr_float(proj, "softcap") == variant["cap"]
    else:
        assert "softcap" not in proj.attributes
    assert not ops_named(module, "linalg.matmul")
    assert not ops_named(module, "tensor.collapse_shape")
    assert not ops_named(module, "linalg.fill")
    # A split into heads is put back after the projection, and only then.
    expands = ops_named(module, "tensor.expand_shape")
    result = first_op(module, "func.return").operands[0]
    if str(result.type) == str(proj.results[0].type):
        assert not expands
    else:
        assert len(expands) == 1 and expands[0].operands[0] == proj.results[0]
        assert expands[0].results[0] == result


@pytest.mark.parametrize(("dims", "dtype", "variant"), POSITIVE)
def test_fused_proj_computes_the_unfused_chain(dims: list, dtype: str, variant: dict) -> None:
    text = proj_text(dims, dtype, **variant)
    # Small caps make the softcap visible in the numbers: |y| reaches several times c.
    if "cap" in variant:
        text = proj_text(dims, dtype, **{**variant, "cap": 2.0})
    inputs = random_inputs(text, sizes=(2, 3))
    assert_fusion_preserves(text, PASS, inputs, rtol=1e-6 if dtype == "f32" else 1e-2)


def test_projections_sharing_one_collapse_all_fuse() -> None:
    """After cse, q/k/v projections read one collapse_shape of x."""
    b = Builder("qkv")
    x = b.arg("x", ["B", "S", 32], "f32")
    weights = [b.arg(name, [16, 32], "f32") for name in ("wq", "wk", "wv")]
    outputs = [b.linear(x, w) for w in weights]
    text = b.text(*outputs)
    module = run(text, "cse, " + PASS)
    projs = ops_named(module, "tessera.mma.proj")
    assert len(projs) == 3
    assert all(p.operands[0] == block_arguments(module)[0] for p in projs)
    assert not ops_named(module, "tensor.collapse_shape")


def test_matcher_reads_the_linear() -> None:
    module = parse(proj_text(["B", "S", 64], "bf16", bias=True))
    matmul = first_op(module, "linalg.matmul")
    x, w, bias = block_arguments(module)
    linear = match_linear(matmul)
    assert linear is not None and linear.x == x and linear.w == w
    assert [op.name for op in linear.ops] == [
        "linalg.matmul",
        "arith.truncf",
        "tensor.expand_shape",
    ]
    assert linear_output(linear.output) == linear
    found = match_proj(matmul)
    assert found is not None and found.bias == bias and found.root.name == "arith.addf"


def test_matcher_reads_a_split_into_heads_only_when_asked() -> None:
    """tessera-fuse-gated-mlp asks for Linears whose output is [..., N]: a q projection
    ending in the split into heads is none of its projections."""
    module = parse(proj_text(["B", "S", 64], "bf16", heads=(4, 6)))
    matmul = first_op(module, "linalg.matmul")
    expand = first_op(module, "tensor.expand_shape")
    assert match_linear(matmul) is None
    assert linear_output(expand.results[0]) is None
    linear = match_linear(matmul, split=True)
    assert linear is not None and linear.split == (4, 6)
    assert linear.output == expand.results[0]
    assert linear.x == block_arguments(module)[0]


def test_split_is_put_back_with_the_original_sizes_and_location() -> None:
    text = proj_text(["B", "S", 64], "f32", heads=(4, 6))
    module = parse(text)
    (expand,) = ops_named(module, "tensor.expand_shape")
    location = str(expand.location)
    sizes = list(expand.operands[1:])
    run_pipeline(module, f"builtin.module({PASS})")
    proj = only_op(module, "tessera.mma.proj")
    (split,) = ops_named(module, "tensor.expand_shape")
    assert str(proj.results[0].type) == "tensor<?x?x24xf32>"
    assert split.operands[0] == proj.results[0]
    assert [[int(i) for i in g] for g in split.attributes["reassociation"]] == [[0], [1], [2, 3]]
    assert list(split.operands[1:]) == sizes
    assert str(split.results[0].type) == "tensor<?x?x4x6xf32>"
    assert str(proj.location) == str(split.location) == location


NEGATIVE = {
    "accumulator_is_not_zero": (["B", "S", 64], "f32", {"accumulator": 1.0}),
    "accumulator_is_not_f32": (["B", "S", 64], "bf16", {"accumulator_dtype": "bf16"}),
    "weight_is_not_transposed": (["B", "S", 64], "f32", {"transposed": False}),
    "truncf_has_another_user": (["B", "S", 64], "bf16", {"also_return": "truncf"}),
    # The rows stay [B·S] and only N is split: x's leading dims are not restored.
    "expand_keeps_rows_collapsed": (
        [2, 4, 64],
        "f32",
        {"n": 24, "expand_as": ([[0], [1, 2]], (8, 4, 6))},
    ),
    # The rows come back as [4, 2] from x [2, 4, K].
    "expand_regroups_rows": (
        [2, 4, 64],
        "bf16",
        {"n": 24, "expand_as": ([[0, 1], [2, 3]], (4, 2, 4, 6))},
    ),
}


@pytest.mark.parametrize("reason", sorted(NEGATIVE))
def test_no_fusion(reason: str) -> None:
    dims, dtype, variant = NEGATIVE[reason]
    text = proj_text(dims, dtype, **variant)
    before = str(parse(text))
    after = run(text, PASS)
    assert str(after) == before


@pytest.mark.parametrize(
    "variant",
    [
        {"cap": 30.0, "cap_outer": 20.0},  # c1·tanh(y/c2) with c1 ≠ c2
        {"cap": 30.0, "also_return": "proj"},  # the uncapped value is used too
    ],
)
def test_no_softcap_when_the_chain_is_not_exactly_one(variant: dict) -> None:
    module = run(proj_text(["B", "S", 64], "f32", **variant), PASS)
    proj = only_op(module, "tessera.mma.proj")
    assert "softcap" not in proj.attributes
    assert ops_named(module, "math.tanh")


def test_head_dim_bias_after_a_split_is_not_folded() -> None:
    """A [D] vector added after the split into heads is not the Linear's [N] bias."""
    b = Builder("proj")
    x = b.arg("x", ["B", "S", 16], "f32")
    w = b.arg("w", [12, 16], "f32")
    per_head = b.arg("per_head", [6], "f32")
    flat = b.collapse(x, [[0, 1], [2]])
    y = b.expand(b.matmul_t(flat, w), [[0, 1], [2, 3]], ("B", "S", 2, 6))
    text = b.text(b.op("arith.addf", y, b.broadcast(per_head, y.dims, [0, 1, 2])))
    module = assert_fusion_preserves(text, PASS, random_inputs(text), rtol=1e-6)
    proj = only_op(module, "tessera.mma.proj")
    assert len(proj.operands) == 2
    assert ops_named(module, "arith.addf")


def test_bias_broadcast_over_another_axis_is_not_folded() -> None:
    b = Builder("proj")
    x = b.arg("x", [4, 16], "f32")
    w = b.arg("w", [4, 16], "f32")
    column = b.arg("column", [4], "f32")
    y = b.linear(x, w)
    module = run(b.text(b.op("arith.addf", y, b.broadcast(column, y.dims, [1]))), PASS)
    proj = only_op(module, "tessera.mma.proj")
    assert len(proj.operands) == 2
    assert ops_named(module, "arith.addf")
