"""tessera-fuse-rope: reading dense constants and tensor elements, the table classifier, the
matcher, and one numerical check that the fused op's attributes reproduce the unfused rope.

The rope IR is generated here as the front end writes transformers' Gemma rotary embedding
(freqs = positions[..., None] · inv_freq, emb = concat(freqs, freqs), cos/sin × attention
scaling, broadcast over heads, q·cos + rotate_half(q)·sin); the numerical check compares
transformers' own Gemma 3 rope (both of its tables) with a torch version of
``tessera.rope.apply``'s documented semantics, fed the attributes the pass derived.
"""

from __future__ import annotations

import math

import pytest
import seeds
import torch
import transformers
from mlir import ir
from transformers.models.gemma3.modeling_gemma3 import (
    Gemma3RotaryEmbedding,
    apply_rotary_pos_emb,
)

from tessera.context import make_context, parse_module
from tessera.dialects import RopeApply
from tessera.ir_walk import walk_ops
from tessera.models.tiny import CONFIGS
from tessera.passes.constant_values import dense_elements
from tessera.passes.rope_frequencies import fit_frequencies, rounding_of
from tessera.passes.rope_match import match_rope
from tessera.passes.rope_tables import read_tables
from tessera.passes.scalar_eval import NotEvaluable
from tessera.passes.tensor_eval import ElementEvaluator, OutOfBounds
from tessera.pipeline import run_pipeline

THETA_1E4_D8 = [1.0, 0.100000001, 0.00999999978, 0.00100000005]


def parse(text: str) -> ir.Module:
    return parse_module(text, make_context(), "test.mlir")


def ops_named(module: ir.Module, name: str) -> list[ir.Operation]:
    return [op for op in walk_ops(module.operation) if op.name == name]


def returned(module: ir.Module) -> list[ir.Value]:
    return list(ops_named(module, "func.return")[0].operands)


def arguments(module: ir.Module) -> list[ir.Value]:
    return list(ops_named(module, "func.func")[0].regions[0].blocks[0].arguments)


# --------------------------------------------------------------------------- IR generator


def rope_ir(
    inv_freq: list[float],
    heads: int = 2,
    dtype: str = "f32",
    one_row: bool = False,
    attention_scaling: float | None = None,
    swap_halves: bool = False,
) -> str:
    """@rope(xs [B, S, H, D], positions [B or 1, S] i64) -> [B, H, S, D]: xs transposed to
    [B, H, S, D] and rotated by tables computed from ``inv_freq`` as transformers does."""
    half = len(inv_freq)
    d, t, h = 2 * half, dtype, heads
    rows = "1" if one_row else "?"
    xs_ty, x_ty = f"tensor<?x?x{h}x{d}x{t}>", f"tensor<?x{h}x?x{d}x{t}>"
    half_ty = f"tensor<?x{h}x?x{half}x{t}>"
    f3, e3 = f"tensor<{rows}x?x{half}xf32>", f"tensor<{rows}x?x{d}xf32>"
    constants = ", ".join(repr(float(f)) for f in inv_freq)
    empty3 = "%S" if one_row else "%B, %S"
    lines = [
        "%c0 = arith.constant 0 : index",
        "%c1 = arith.constant 1 : index",
        f"%B = tensor.dim %xs, %c0 : {xs_ty}",
        f"%S = tensor.dim %xs, %c1 : {xs_ty}",
        f"%inv = arith.constant dense<[{constants}]> : tensor<{half}xf32>",
        f"%pf = arith.sitofp %pos : tensor<{rows}x?xi64> to tensor<{rows}x?xf32>",
        f"%e3 = tensor.empty({empty3}) : {f3}",
        f"%pb = linalg.broadcast ins(%pf : tensor<{rows}x?xf32>) outs(%e3 : {f3}) dimensions = [2]",
        f"%ib = linalg.broadcast ins(%inv : tensor<{half}xf32>) outs(%e3 : {f3}) "
        "dimensions = [0, 1]",
        f"%f = arith.mulf %pb, %ib : {f3}",
        f"%emb = tensor.concat dim(2) %f, %f : ({f3}, {f3}) -> {e3}",
        f"%cos0 = math.cos %emb : {e3}",
        f"%sin0 = math.sin %emb : {e3}",
    ]
    cos, sin = "%cos0", "%sin0"
    if attention_scaling is not None:
        lines += [
            f"%as = arith.constant {attention_scaling!r} : f32",
            f"%e3b = tensor.empty({empty3}) : {e3}",
            f"%asb = linalg.fill ins(%as : f32) outs(%e3b : {e3}) -> {e3}",
            f"%cos1 = arith.mulf %cos0, %asb : {e3}",
            f"%sin1 = arith.mulf %sin0, %asb : {e3}",
        ]
        cos, sin = "%cos1", "%sin1"
    table = f"tensor<{rows}x?x{d}x{t}>"
    if t != "f32":
        lines += [
            f"%cost = arith.truncf {cos} : {e3} to {table}",
            f"%sint = arith.truncf {sin} : {e3} to {table}",
        ]
        cos, sin = "%cost", "%sint"
    source_ty, dims = table, "[1]"
    if one_row:
        lines += [
            f"%cos2 = tensor.collapse_shape {cos} [[0, 1], [2]] : {table} into tensor<?x{d}x{t}>",
            f"%sin2 = tensor.collapse_shape {sin} [[0, 1], [2]] : {table} into tensor<?x{d}x{t}>",
        ]
        cos, sin, source_ty, dims = "%cos2", "%sin2", f"tensor<?x{d}x{t}>", "[0, 1]"
    first, second = ("%x1", "%nx2") if swap_halves else ("%nx2", "%x1")
    lines += [
        f"%e4 = tensor.empty(%B, %S) : {x_ty}",
        f"%cosb = linalg.broadcast ins({cos} : {source_ty}) outs(%e4 : {x_ty}) dimensions = {dims}",
        f"%sinb = linalg.broadcast ins({sin} : {source_ty}) outs(%e4 : {x_ty}) dimensions = {dims}",
        f"%x = linalg.transpose ins(%xs : {xs_ty}) outs(%e4 : {x_ty}) permutation = [0, 2, 1, 3]",
        f"%x1 = tensor.extract_slice %x[0, 0, 0, 0] [%B, {h}, %S, {half}] [1, 1, 1, 1] : "
        f"{x_ty} to {half_ty}",
        f"%x2 = tensor.extract_slice %x[0, 0, 0, {half}] [%B, {h}, %S, {half}] [1, 1, 1, 1] : "
        f"{x_ty} to {half_ty}",
        f"%nx2 = arith.negf %x2 : {half_ty}",
        f"%rh = tensor.concat dim(3) {first}, {second} : ({half_ty}, {half_ty}) -> {x_ty}",
        f"%a = arith.mulf %x, %cosb : {x_ty}",
        f"%b = arith.mulf %rh, %sinb : {x_ty}",
        f"%y = arith.addf %a, %b : {x_ty}",
        f"return %y : {x_ty}",
    ]
    body = "\n  ".join(lines)
    return f"func.func @rope(%xs: {xs_ty}, %pos: tensor<{rows}x?xi64>) -> {x_ty} {{\n  {body}\n}}\n"


def root_of(module: ir.Module) -> ir.Operation:
    return returned(module)[0].owner.operation


# --------------------------------------------------------------------------- dense elements


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("dense<[[1.5, -2.0], [0xFF80, 3.0]]> : tensor<2x2xbf16>", [1.5, -2.0, -math.inf, 3.0]),
        ("dense<[0.5, 0xFC00]> : tensor<2xf16>", [0.5, -math.inf]),
        ("dense<[1.0, 0xFF800000]> : tensor<2xf32>", [1.0, -math.inf]),
        ("dense<-2.5> : tensor<3xbf16>", [-2.5, -2.5, -2.5]),
        ("dense<[true, false, true]> : tensor<3xi1>", [1, 0, 1]),
        ("dense<true> : tensor<2xi1>", [1, 1]),
        ("dense<[7, -3]> : tensor<2xi64>", [7, -3]),
    ],
)
def test_dense_elements_reads_every_element_type(literal: str, expected: list[float]) -> None:
    with make_context():
        assert dense_elements(ir.Attribute.parse(literal)) == expected


def test_dense_elements_decodes_large_bf16_constants_from_hex() -> None:
    values = [float(i) - 100.0 for i in range(200)]  # exact in bf16; printed as hex when large
    literal = "dense<[" + ", ".join(repr(v) for v in values) + "]> : tensor<200xbf16>"
    with make_context():
        attr = ir.Attribute.parse(literal)
        assert str(attr).startswith('dense<"0x')
        assert dense_elements(attr) == values


# --------------------------------------------------------------------------- tensor elements

ELEMENTS = """
func.func @elements(%a: tensor<2x3xf32>) -> (tensor<3x4xf32>, tensor<2x3xf32>, tensor<6xf32>) {
  %c = arith.constant dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]> : tensor<2x3xf32>
  %e = tensor.empty() : tensor<3x2xf32>
  %t = linalg.transpose ins(%c : tensor<2x3xf32>) outs(%e : tensor<3x2xf32>) permutation = [1, 0]
  %s = tensor.extract_slice %t[1, 0] [2, 2] [1, 1] : tensor<3x2xf32> to tensor<2x2xf32>
  %n = arith.negf %s : tensor<2x2xf32>
  %k = tensor.concat dim(1) %n, %s : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x4xf32>
  %x = tensor.expand_shape %k [[0], [1, 2]] output_shape [2, 2, 2]
      : tensor<2x4xf32> into tensor<2x2x2xf32>
  %y = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x2x2xf32> into tensor<4x2xf32>
  %e2 = tensor.empty() : tensor<3x4xf32>
  %g = linalg.generic {
      indexing_maps = [affine_map<(d0, d1) -> (d1, 0)>, affine_map<(d0, d1) -> (d0, d1)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%y : tensor<4x2xf32>) outs(%e2 : tensor<3x4xf32>) {
  ^bb0(%in: f32, %out: f32):
    %i = linalg.index 0 : index
    %ii = arith.index_cast %i : index to i64
    %fi = arith.sitofp %ii : i64 to f32
    %r = arith.addf %in, %fi : f32
    linalg.yield %r : f32
  } -> tensor<3x4xf32>
  %sum = arith.addf %a, %c : tensor<2x3xf32>
  %flat = tensor.collapse_shape %c [[0, 1]] : tensor<2x3xf32> into tensor<6xf32>
  return %g, %sum, %flat : tensor<3x4xf32>, tensor<2x3xf32>, tensor<6xf32>
}
"""


def test_element_evaluator_reads_through_views_concat_and_generics() -> None:
    module = parse(ELEMENTS)
    generic, total, flat = returned(module)
    constant = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    # t = cᵀ; s = t[1:3]; k = [-s, s]; y = k viewed as [4, 2]; g[i, j] = y[j, 0] + i.
    s = [[constant[c][r] for c in range(2)] for r in (1, 2)]
    k = [[-s[r][0], -s[r][1], s[r][0], s[r][1]] for r in range(2)]
    y = [[k[r][2 * p], k[r][2 * p + 1]] for r in range(2) for p in range(2)]
    evaluator = ElementEvaluator()
    for i in range(3):
        for j in range(4):
            assert evaluator.at(generic, (i, j)) == y[j][0] + i
    assert [evaluator.at(flat, (n,)) for n in range(6)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    with pytest.raises(OutOfBounds):
        evaluator.at(generic, (3, 0))
    with pytest.raises(NotEvaluable):
        evaluator.at(total, (0, 0))  # %a is an argument
    leaves = ElementEvaluator({arguments(module)[0]: lambda index: 10.0 * index[0] + index[1]})
    assert leaves.at(total, (1, 2)) == 12.0 + 6.0


# --------------------------------------------------------------------------- tables, matcher


def hf_inv_freq(layer_type: str) -> tuple[list[float], dict]:
    """Gemma 3's rope frequencies for one layer type (the tiny gemma3-gqa config: theta 1e4
    local, 1e6 global with linear scaling 8) and that type's rope parameters."""
    settings = dict(CONFIGS["gemma3-gqa"])
    settings.pop("generation")
    config = transformers.Gemma3TextConfig(**settings)
    rotary = Gemma3RotaryEmbedding(config)
    inv_freq = getattr(rotary, f"{layer_type}_inv_freq").tolist()
    return inv_freq, config.rope_parameters[layer_type]


@pytest.mark.parametrize(
    ("layer_type", "theta", "scaling"),
    [("sliding_attention", 1e4, 1.0), ("full_attention", 1e6, 8.0)],
)
def test_tables_give_theta_and_scaling(layer_type: str, theta: float, scaling: float) -> None:
    inv_freq, _ = hf_inv_freq(layer_type)
    module = parse(rope_ir(inv_freq, dtype="bf16", attention_scaling=1.0))
    found = match_rope(root_of(module))
    assert found is not None
    assert (found.theta, found.scaling, found.rotary_dim, found.seq_axis) == (
        theta,
        scaling,
        len(inv_freq) * 2,
        2,
    )
    assert found.positions.value == arguments(module)[1]


def hf_frequencies(theta: float, head_dim: int, factor: float, dtype: torch.dtype) -> list[float]:
    """transformers' inv_freq (f32 arithmetic, linear scaling) as a ``dtype`` model holds it."""
    lanes = torch.arange(0, head_dim, 2, dtype=torch.int64).float()
    inv_freq = 1.0 / (theta ** (lanes / head_dim)) / factor
    return inv_freq.to(dtype).float().tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("theta", "head_dim", "factor"),
    [(1e4, 16, 1.0), (1e6, 256, 8.0), (5e5, 128, 1.0), (1e4, 32, 4.0)],
)
def test_fit_recovers_theta_and_scaling(
    theta: float, head_dim: int, factor: float, dtype: torch.dtype
) -> None:
    frequencies = hf_frequencies(theta, head_dim, factor, dtype)
    expected_rounding = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
    assert rounding_of(frequencies) == expected_rounding[dtype]
    assert fit_frequencies(frequencies, head_dim) == (theta, factor)


def test_fit_rejects_frequencies_no_theta_explains() -> None:
    frequencies = hf_frequencies(1e4, 64, 1.0, torch.float32)
    # Llama-3-style rescaling of the low frequencies.
    rescaled = [f if i < 16 else f / 8 for i, f in enumerate(frequencies)]
    assert fit_frequencies(rescaled, 64) is None
    # One entry off by more than bf16 rounding, in a bf16-rounded table.
    rounded = hf_frequencies(1e4, 64, 1.0, torch.bfloat16)
    rounded[20] = float(torch.tensor(rounded[20] * 1.02).to(torch.bfloat16))
    assert rounding_of(rounded) == "bf16"
    assert fit_frequencies(rounded, 64) is None


def test_tables_read_one_row_of_positions() -> None:
    module = parse(rope_ir(THETA_1E4_D8, one_row=True))
    found = match_rope(root_of(module))
    assert found is not None and found.theta == 1e4 and found.seq_axis == 2


def test_positions_of_one_row_are_broadcast_to_the_batch() -> None:
    # positions [S] (rank 1) behind tables broadcast over batch and heads, x [2, S, H, D]
    text = rope_ir(THETA_1E4_D8).replace("%pos: tensor<?x?xi64>", "%pos: tensor<?xi64>")
    text = text.replace(
        "%pf = arith.sitofp %pos : tensor<?x?xi64> to tensor<?x?xf32>",
        "%p1 = arith.sitofp %pos : tensor<?xi64> to tensor<?xf32>\n"
        "  %pe = tensor.empty(%B, %S) : tensor<?x?xf32>\n"
        "  %pf = linalg.broadcast ins(%p1 : tensor<?xf32>) outs(%pe : tensor<?x?xf32>) "
        "dimensions = [0]",
    )
    module = parse(text)
    found = match_rope(root_of(module))
    assert found is not None and found.positions.value == arguments(module)[1]
    run_pipeline(module, "builtin.module(tessera-fuse-rope)")
    (op,) = ops_named(module, "tessera.rope.apply")
    positions = op.operands[1]
    assert str(positions.type) == "tensor<?x?xi64>"
    assert positions.owner.operation.name == "linalg.broadcast"


@pytest.mark.parametrize(
    "text",
    [
        rope_ir(THETA_1E4_D8, attention_scaling=0.5),
        rope_ir(THETA_1E4_D8, swap_halves=True),
        rope_ir([1.0, 0.1, 0.02, 0.001]),
    ],
    ids=["scaled-tables", "swapped-halves", "not-geometric"],
)
def test_matcher_rejects(text: str) -> None:
    module = parse(text)
    assert match_rope(root_of(module)) is None
    before = str(module)
    run_pipeline(module, "builtin.module(tessera-fuse-rope)")
    assert str(module) == before


def test_read_tables_rejects_cos_in_place_of_sin() -> None:
    module = parse(rope_ir(THETA_1E4_D8))
    broadcasts = ops_named(module, "linalg.broadcast")
    cos_b, sin_b = broadcasts[2].results[0], broadcasts[3].results[0]
    x = ops_named(module, "linalg.transpose")[0].results[0]
    assert read_tables(x, cos_b, sin_b) is not None
    # cos²+cos² is not 1: not a rotation
    assert read_tables(x, cos_b, cos_b) is None


# --------------------------------------------------------------------------- numerics


def rope_semantics(
    x: torch.Tensor, positions: torch.Tensor, theta: float, scaling: float, rotary_dim: int
) -> torch.Tensor:
    """``tessera.rope.apply`` as its docstring defines it: x [B, S, H, D], half_split."""
    half = rotary_dim // 2
    lanes = torch.arange(half, dtype=torch.float64)
    angle = positions.double()[..., None] / scaling * theta ** (-2 * lanes / rotary_dim)
    cos, sin = angle.cos()[:, :, None, :], angle.sin()[:, :, None, :]
    first, second = x[..., :half], x[..., half:rotary_dim]
    return torch.cat(
        [first * cos - second * sin, second * cos + first * sin, x[..., rotary_dim:]], dim=-1
    )


@pytest.mark.parametrize("layer_type", ["sliding_attention", "full_attention"])
def test_fused_rope_reproduces_the_unfused_math(layer_type: str) -> None:
    settings = dict(CONFIGS["gemma3-gqa"])
    settings.pop("generation")
    config = transformers.Gemma3TextConfig(**settings)
    rotary = Gemma3RotaryEmbedding(config)
    inv_freq = getattr(rotary, f"{layer_type}_inv_freq").tolist()
    module = parse(rope_ir(inv_freq, heads=config.num_attention_heads))
    run_pipeline(module, "builtin.module(tessera-fuse-rope)")
    (op,) = ops_named(module, "tessera.rope.apply")
    rope = RopeApply(op)
    generator = seeds.generator()
    batch, tokens, heads, head_dim = 2, 11, config.num_attention_heads, config.head_dim
    q = torch.randn(batch, heads, tokens, head_dim, generator=generator, dtype=torch.float64)
    positions = torch.arange(tokens)[None, :] + 5 * torch.arange(batch)[:, None]
    cos, sin = rotary(q, positions, layer_type)
    expected, _ = apply_rotary_pos_emb(q, q, cos, sin)
    rotary_dim = rope.rotary_dim
    fused = rope_semantics(q.transpose(1, 2), positions, rope.theta, rope.scaling, rotary_dim)
    # transformers computes the angles in f32.
    torch.testing.assert_close(fused.transpose(1, 2), expected, rtol=1e-5, atol=2e-5)
    # The check is sharp enough to see theta or scaling slightly off.
    for theta, scaling in ((rope.theta * 1.02, rope.scaling), (rope.theta, rope.scaling * 1.02)):
        wrong = rope_semantics(q.transpose(1, 2), positions, theta, scaling, rotary_dim)
        assert not torch.allclose(wrong.transpose(1, 2), expected, rtol=1e-3, atol=1e-3)
