"""tessera-fuse-attention: the reshape and mask helpers it stands on, the matcher, and one
numerical check that the fused op's attributes reproduce the unfused attention.

The attention IR is generated here in the high-level form of docs/high-level-ir.md (dynamic
batch and sequence, f32 or bf16, optional GQA repeat, softcap and masks); the numerical check
compares transformers' own eager attention (what the IR spells out) with a torch version of
``tessera.attention.flash``'s documented semantics, fed the attributes the pass derived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import seeds
import torch
from mlir import ir
from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

from tessera.context import make_context, parse_module
from tessera.dialects import FlashAttention
from tessera.ir_walk import walk_ops
from tessera.passes.attention_match import match_attention
from tessera.passes.attention_operands import GQA, GQA_HEADS, HEADS
from tessera.passes.mask_eval import (
    NO_MASK,
    MaskKind,
    classify_additive_mask,
    classify_boolean_mask,
)
from tessera.passes.reshape_view import reshape_source
from tessera.pipeline import run_pipeline

LOWEST = {"f32": "-3.40282347E+38", "bf16": "-3.38953139E+38"}


def parse(text: str) -> ir.Module:
    return parse_module(text, make_context(), "test.mlir")


def ops_named(module: ir.Module, name: str) -> list[ir.Operation]:
    return [op for op in walk_ops(module.operation) if op.name == name]


def function_arguments(module: ir.Module) -> list[ir.Value]:
    return list(ops_named(module, "func.func")[0].regions[0].blocks[0].arguments)


def f32(number: float) -> float:
    """``number`` rounded to f32, as an f32 attribute or constant holds it."""
    return float(torch.tensor(number, dtype=torch.float32))


# --------------------------------------------------------------------------- IR generator


@dataclass(frozen=True)
class Attention:
    """One attention chain to generate: q [B, heads, S, D], k/v [B, kv_heads, S, D]."""

    dtype: str = "f32"
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 8
    scale: float = 0.25
    softcap: float | None = None
    mask: str | None = "additive"  # "additive", "select" or None
    window: int | None = None
    softmax_dim: int = 3


def mask_body(window: int | None, dtype: str | None) -> str:
    """A no-input generic body over (b, 1, i, j): allowed ⇔ j ≤ i [and i − j < window];
    ``dtype`` None yields the i1 itself, else 0 / lowest of ``dtype``."""
    lines = [
        "%i = linalg.index 2 : index",
        "%j = linalg.index 3 : index",
        "%ok0 = arith.cmpi sle, %j, %i : index",
    ]
    result = "%ok0"
    if window is not None:
        lines += [
            f"%w = arith.constant {window} : index",
            "%d = arith.subi %i, %j : index",
            "%near = arith.cmpi slt, %d, %w : index",
            "%ok1 = arith.andi %ok0, %near : i1",
        ]
        result = "%ok1"
    if dtype is None:
        return "\n      ".join([*lines, f"linalg.yield {result} : i1"])
    lines += [
        f"%allow = arith.constant 0.0 : {dtype}",
        f"%block = arith.constant {LOWEST[dtype]} : {dtype}",
        f"%r = arith.select {result}, %allow, %block : {dtype}",
        f"linalg.yield %r : {dtype}",
    ]
    return "\n      ".join(lines)


def attention_ir(a: Attention) -> str:
    """A function @attention(q, k, v) in the front end's form, result [B, heads, S, D]."""
    t, h, hkv, d = a.dtype, a.heads, a.kv_heads, a.head_dim
    repeats = h // hkv
    bf16 = t == "bf16"
    q_ty, kv_ty = f"tensor<?x{h}x?x{d}x{t}>", f"tensor<?x{hkv}x?x{d}x{t}>"
    s4, s3 = f"tensor<?x{h}x?x?x{t}>", f"tensor<?x?x?x{t}>"
    lines = [
        "%c0 = arith.constant 0 : index",
        "%c2 = arith.constant 2 : index",
        f"%ch = arith.constant {h} : index",
        "%zero = arith.constant 0.0 : f32",
        f"%B = tensor.dim %q, %c0 : {q_ty}",
        f"%S = tensor.dim %q, %c2 : {q_ty}",
        "%BH = arith.muli %B, %ch : index",
    ]
    k, v = "%k", "%v"
    if repeats > 1:
        wide = f"tensor<?x{hkv}x{repeats}x?x{d}x{t}>"
        lines.append(f"%rep0 = tensor.empty(%B, %S) : {wide}")
        for name in ("k", "v"):
            lines += [
                f"%{name}b = linalg.broadcast ins(%{name} : {kv_ty}) outs(%rep0 : {wide}) "
                "dimensions = [2]",
                f"%{name}r = tensor.collapse_shape %{name}b [[0], [1, 2], [3], [4]] : {wide} "
                f"into {q_ty}",
            ]
        k, v = "%kr", "%vr"
    acc3 = "tensor<?x?x?xf32>"
    lines += [
        f"%kt0 = tensor.empty(%B, %S) : tensor<?x{h}x{d}x?x{t}>",
        f"%kt = linalg.transpose ins({k} : {q_ty}) outs(%kt0 : tensor<?x{h}x{d}x?x{t}>) "
        "permutation = [0, 1, 3, 2]",
        f"%q3 = tensor.collapse_shape %q [[0, 1], [2], [3]] : {q_ty} into tensor<?x?x{d}x{t}>",
        f"%kt3 = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<?x{h}x{d}x?x{t}> "
        f"into tensor<?x{d}x?x{t}>",
        f"%s0 = tensor.empty(%BH, %S, %S) : {acc3}",
        f"%s1 = linalg.fill ins(%zero : f32) outs(%s0 : {acc3}) -> {acc3}",
        f"%s2 = linalg.batch_matmul ins(%q3, %kt3 : tensor<?x?x{d}x{t}>, tensor<?x{d}x?x{t}>) "
        f"outs(%s1 : {acc3}) -> {acc3}",
    ]
    scores3 = "%s2"
    if bf16:
        lines.append(f"%s3 = arith.truncf %s2 : {acc3} to {s3}")
        scores3 = "%s3"
    lines += [
        f"%s = tensor.expand_shape {scores3} [[0, 1], [2], [3]] output_shape [%B, {h}, %S, %S] "
        f": {s3} into {s4}",
        f"%e4 = tensor.empty(%B, %S, %S) : {s4}",
        f"%cscale = arith.constant {a.scale!r} : {t}",
        f"%scale = linalg.fill ins(%cscale : {t}) outs(%e4 : {s4}) -> {s4}",
        f"%x0 = arith.mulf %s, %scale : {s4}",
    ]
    x = "%x0"
    if a.softcap is not None:
        lines += [
            f"%ccap = arith.constant {a.softcap!r} : {t}",
            f"%cap = linalg.fill ins(%ccap : {t}) outs(%e4 : {s4}) -> {s4}",
            f"%x1 = arith.divf %x0, %cap : {s4}",
            f"%x2 = math.tanh %x1 : {s4}",
            f"%x3 = arith.mulf %x2, %cap : {s4}",
        ]
        x = "%x3"
    if a.mask is not None:
        element = t if a.mask == "additive" else "i1"
        m4, m3 = f"tensor<?x1x?x?x{element}>", f"tensor<?x?x?x{element}>"
        b4 = f"tensor<?x{h}x?x?x{element}>"
        body = mask_body(a.window, t if a.mask == "additive" else None)
        lines += [
            f"%m0 = tensor.empty(%B, %S, %S) : {m4}",
            "%m = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> "
            '(d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", '
            f'"parallel"]}} outs(%m0 : {m4}) {{\n    ^bb0(%out: {element}):\n      {body}\n'
            f"  }} -> {m4}",
            f"%m3 = tensor.collapse_shape %m [[0, 1], [2], [3]] : {m4} into {m3}",
            f"%mb0 = tensor.empty(%B, %S, %S) : {b4}",
            f"%mb = linalg.broadcast ins(%m3 : {m3}) outs(%mb0 : {b4}) dimensions = [1]",
        ]
        if a.mask == "additive":
            lines.append(f"%xm = arith.addf {x}, %mb : {s4}")
        else:
            lines += [
                f"%clow = arith.constant {LOWEST[t]} : {t}",
                f"%low = linalg.fill ins(%clow : {t}) outs(%e4 : {s4}) -> {s4}",
                f"%xm = arith.select %mb, {x}, %low : {b4}, {s4}",
            ]
        x = "%xm"
    f4 = f"tensor<?x{h}x?x?xf32>"
    if bf16:
        lines.append(f"%xf = arith.extf {x} : {s4} to {f4}")
        x = "%xf"
    lines += [
        f"%f4 = tensor.empty(%B, %S, %S) : {f4}",
        f"%p = linalg.softmax dimension({a.softmax_dim}) ins({x} : {f4}) outs(%f4 : {f4}) -> {f4}",
    ]
    p = "%p"
    if bf16:
        lines.append(f"%pt = arith.truncf %p : {f4} to {s4}")
        p = "%pt"
    o3, o3f = f"tensor<?x?x{d}x{t}>", f"tensor<?x?x{d}xf32>"
    lines += [
        f"%p3 = tensor.collapse_shape {p} [[0, 1], [2], [3]] : {s4} into {s3}",
        f"%v3 = tensor.collapse_shape {v} [[0, 1], [2], [3]] : {q_ty} into {o3}",
        f"%o0 = tensor.empty(%BH, %S) : {o3f}",
        f"%o1 = linalg.fill ins(%zero : f32) outs(%o0 : {o3f}) -> {o3f}",
        f"%o2 = linalg.batch_matmul ins(%p3, %v3 : {s3}, {o3}) outs(%o1 : {o3f}) -> {o3f}",
    ]
    out3 = "%o2"
    if bf16:
        lines.append(f"%o3 = arith.truncf %o2 : {o3f} to {o3}")
        out3 = "%o3"
    lines += [
        f"%o = tensor.expand_shape {out3} [[0, 1], [2], [3]] output_shape [%B, {h}, %S, {d}] "
        f": {o3} into {q_ty}",
        f"return %o : {q_ty}",
    ]
    body = "\n  ".join(lines)
    return (
        f"func.func @attention(%q: {q_ty}, %k: {kv_ty}, %v: {kv_ty}) -> {q_ty} {{\n  {body}\n}}\n"
    )


def fuse(text: str) -> ir.Module:
    module = parse(text)
    run_pipeline(module, "builtin.module(tessera-fuse-attention)")
    return module


def root_of(module: ir.Module) -> ir.Operation:
    """The op the pattern ends at: the producer of the returned value."""
    (ret,) = ops_named(module, "func.return")
    return ret.operands[0].owner.operation


# --------------------------------------------------------------------------- reshape views


RESHAPES = """
func.func @views(%k: tensor<?x2x?x8xf32>, %u: tensor<?x1x?x?xf32>)
    -> (tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<?x?x?xf32>, tensor<?x4x?x8xf32>) {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %B = tensor.dim %k, %c0 : tensor<?x2x?x8xf32>
  %T = tensor.dim %k, %c2 : tensor<?x2x?x8xf32>
  %e = tensor.empty(%B, %T) : tensor<?x2x2x?x8xf32>
  %kb = linalg.broadcast ins(%k : tensor<?x2x?x8xf32>) outs(%e : tensor<?x2x2x?x8xf32>)
      dimensions = [2]
  %k4 = tensor.collapse_shape %kb [[0], [1, 2], [3], [4]]
      : tensor<?x2x2x?x8xf32> into tensor<?x4x?x8xf32>
  %twice = tensor.collapse_shape %k4 [[0, 1], [2], [3]]
      : tensor<?x4x?x8xf32> into tensor<?x?x8xf32>
  %once = tensor.collapse_shape %kb [[0, 1, 2], [3], [4]]
      : tensor<?x2x2x?x8xf32> into tensor<?x?x8xf32>
  %unit = tensor.collapse_shape %u [[0, 1], [2], [3]] : tensor<?x1x?x?xf32> into tensor<?x?x?xf32>
  %back = tensor.expand_shape %twice [[0, 1], [2], [3]] output_shape [%B, 4, %T, 8]
      : tensor<?x?x8xf32> into tensor<?x4x?x8xf32>
  return %twice, %once, %unit, %back
      : tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<?x?x?xf32>, tensor<?x4x?x8xf32>
}
"""


def _returned(module: ir.Module) -> list[ir.Value]:
    return list(ops_named(module, "func.return")[0].operands)


def test_reshape_source_reads_two_collapses_as_one() -> None:
    module = parse(RESHAPES)
    twice, once, _, _ = _returned(module)
    broadcast = ops_named(module, "linalg.broadcast")[0].results[0]
    for value, steps in ((twice, 2), (once, 1)):
        found = reshape_source(value, GQA_HEADS)
        assert found is not None and found[0] == broadcast and len(found[1]) == steps


def test_reshape_source_finds_the_nearest_source_of_a_grouping() -> None:
    module = parse(RESHAPES)
    twice, _, _, _ = _returned(module)
    k4 = ops_named(module, "tensor.collapse_shape")[0].results[0]
    found = reshape_source(twice, HEADS)
    assert found is not None and found[0] == k4
    broadcast = ops_named(module, "linalg.broadcast")[0].results[0]
    found = reshape_source(k4, GQA)
    assert found is not None and found[0] == broadcast


def test_reshape_source_rejects_a_different_grouping() -> None:
    module = parse(RESHAPES)
    twice, once, _, _ = _returned(module)
    assert reshape_source(once, ((0,), (1, 2), (3,))) is None
    assert reshape_source(twice, ((0, 1, 2, 3), (4,))) is None


def test_reshape_source_ignores_unit_dims_and_reads_expands() -> None:
    module = parse(RESHAPES)
    twice, _, unit, back = _returned(module)
    u = function_arguments(module)[1]
    found = reshape_source(unit, HEADS)
    assert found is not None and found[0] == u
    found = reshape_source(back, HEADS, expand=True)
    assert found is not None and found[0] == twice


# --------------------------------------------------------------------------- masks


def mask_module(body: str, element: str, shape: str = "?x1x?x?") -> str:
    """A function returning a [B, 4, S, T] broadcast of a generic mask over ``shape``."""
    dims = shape.split("x")
    dynamic = ", ".join(["%n"] * dims.count("?"))
    rank = len(dims)
    loops = ", ".join(f"d{i}" for i in range(rank))
    parallel = ", ".join(['"parallel"'] * rank)
    collapse = "[[0, 1], [2], [3]]" if rank == 4 else None
    lines = [
        f"%m0 = tensor.empty({dynamic}) : tensor<{shape}x{element}>",
        f"%m = linalg.generic {{indexing_maps = [affine_map<({loops}) -> ({loops})>], "
        f"iterator_types = [{parallel}]}} outs(%m0 : tensor<{shape}x{element}>) {{\n"
        f"  ^bb0(%out: {element}):\n    {body}\n  }} -> tensor<{shape}x{element}>",
    ]
    source, source_type = "%m", f"tensor<{shape}x{element}>"
    dims_kept = "[1]"
    if collapse is not None:
        lines.append(
            f"%m3 = tensor.collapse_shape %m {collapse} : tensor<{shape}x{element}> "
            f"into tensor<?x?x?x{element}>"
        )
        source, source_type = "%m3", f"tensor<?x?x?x{element}>"
    else:
        dims_kept = "[0, 1]"
    lines += [
        f"%e = tensor.empty(%n, %n, %n) : tensor<?x4x?x?x{element}>",
        f"%b = linalg.broadcast ins({source} : {source_type}) outs(%e : "
        f"tensor<?x4x?x?x{element}>) dimensions = {dims_kept}",
        f"return %b : tensor<?x4x?x?x{element}>",
    ]
    text = "\n  ".join(lines)
    return f"func.func @mask(%n: index) -> tensor<?x4x?x?x{element}> {{\n  {text}\n}}\n"


# Values point into their module: keep every parsed mask module alive for the session.
_MODULES: list[ir.Module] = []


def returned_mask(text: str) -> ir.Value:
    _MODULES.append(parse(text))
    return _returned(_MODULES[-1])[0]


@pytest.mark.parametrize("window", [None, 1, 3, 1000, 5000])
def test_additive_generic_mask_is_causal_with_its_window(window: int | None) -> None:
    mask = returned_mask(mask_module(mask_body(window, "f32"), "f32"))
    assert classify_additive_mask(mask) == MaskKind(causal=True, window=window)


@pytest.mark.parametrize("window", [None, 4])
def test_boolean_mask_reads_either_polarity(window: int | None) -> None:
    allowed = returned_mask(mask_module(mask_body(window, None), "i1"))
    assert classify_boolean_mask(allowed, True) == MaskKind(causal=True, window=window)
    # The same i1 read as "blocked where true" (masked_fill) blocks the diagonal: no mask kind.
    assert classify_boolean_mask(allowed, False) is None
    future = (
        "%i = linalg.index 2 : index\n    %j = linalg.index 3 : index\n"
        "    %later = arith.cmpi sgt, %j, %i : index\n    linalg.yield %later : i1"
    )
    blocked = returned_mask(mask_module(future, "i1"))
    assert classify_boolean_mask(blocked, False) == MaskKind(causal=True)


def test_mask_that_allows_everything_is_no_mask() -> None:
    body = "%z = arith.constant 0.0 : f32\n    linalg.yield %z : f32"
    assert classify_additive_mask(returned_mask(mask_module(body, "f32"))) == NO_MASK


@pytest.mark.parametrize(
    "body",
    [
        # an attention sink: key 0 always visible besides a window of 4
        "%i = linalg.index 2 : index\n    %j = linalg.index 3 : index\n"
        "    %c0 = arith.constant 0 : index\n    %c4 = arith.constant 4 : index\n"
        "    %past = arith.cmpi sle, %j, %i : index\n    %d = arith.subi %i, %j : index\n"
        "    %near = arith.cmpi slt, %d, %c4 : index\n    %sink = arith.cmpi eq, %j, %c0 : index\n"
        "    %seen = arith.ori %near, %sink : i1\n    %ok = arith.andi %past, %seen : i1\n"
        "    %a = arith.constant 0.0 : f32\n    %l = arith.constant -3.40282347E+38 : f32\n"
        "    %r = arith.select %ok, %a, %l : f32\n    linalg.yield %r : f32",
        # a window that grows with the batch row
        "%b = linalg.index 0 : index\n    %i = linalg.index 2 : index\n"
        "    %j = linalg.index 3 : index\n    %c3 = arith.constant 3 : index\n"
        "    %w = arith.addi %b, %c3 : index\n    %past = arith.cmpi sle, %j, %i : index\n"
        "    %d = arith.subi %i, %j : index\n    %near = arith.cmpi slt, %d, %w : index\n"
        "    %ok = arith.andi %past, %near : i1\n    %a = arith.constant 0.0 : f32\n"
        "    %l = arith.constant -3.40282347E+38 : f32\n"
        "    %r = arith.select %ok, %a, %l : f32\n    linalg.yield %r : f32",
        # causal only up to a far position (a mask made for a maximum length)
        "%i = linalg.index 2 : index\n    %j = linalg.index 3 : index\n"
        "    %c = arith.constant 70000 : index\n    %past = arith.cmpi sle, %j, %i : index\n"
        "    %short = arith.cmpi slt, %i, %c : index\n    %ok = arith.andi %past, %short : i1\n"
        "    %a = arith.constant 0.0 : f32\n    %l = arith.constant -3.40282347E+38 : f32\n"
        "    %r = arith.select %ok, %a, %l : f32\n    linalg.yield %r : f32",
        # a bias rather than a mask (ALiBi-like)
        "%i = linalg.index 2 : index\n    %j = linalg.index 3 : index\n"
        "    %d = arith.subi %j, %i : index\n    %di = arith.index_cast %d : index to i64\n"
        "    %f = arith.sitofp %di : i64 to f32\n    linalg.yield %f : f32",
        # the upper triangle (anti-causal)
        "%i = linalg.index 2 : index\n    %j = linalg.index 3 : index\n"
        "    %ok = arith.cmpi sge, %j, %i : index\n    %a = arith.constant 0.0 : f32\n"
        "    %l = arith.constant -3.40282347E+38 : f32\n"
        "    %r = arith.select %ok, %a, %l : f32\n    linalg.yield %r : f32",
    ],
    ids=["sink", "batch-dependent", "bounded", "bias", "anti-causal"],
)
def test_masks_that_are_not_causal_windows_are_rejected(body: str) -> None:
    assert classify_additive_mask(returned_mask(mask_module(body, "f32"))) is None


def test_static_dense_mask_aligns_queries_to_the_end_of_the_keys() -> None:
    # 3 queries over 5 keys: query i is at key position i + 2; window 2.
    rows = []
    for i in range(3):
        row = ["0.0" if 0 <= i + 2 - j < 2 else "0xFF800000" for j in range(5)]
        rows.append("[" + ", ".join(row) + "]")
    text = f"""
func.func @mask() -> tensor<2x4x3x5xf32> {{
  %c = arith.constant dense<[{", ".join(rows)}]> : tensor<3x5xf32>
  %e = tensor.empty() : tensor<2x4x3x5xf32>
  %b = linalg.broadcast ins(%c : tensor<3x5xf32>) outs(%e : tensor<2x4x3x5xf32>) dimensions = [0, 1]
  return %b : tensor<2x4x3x5xf32>
}}
"""
    assert classify_additive_mask(returned_mask(text)) == MaskKind(causal=True, window=2)


def test_a_mask_argument_is_not_classified() -> None:
    module = parse(
        "func.func @mask(%m: tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32> {\n"
        "  return %m : tensor<?x4x?x?xf32>\n}\n"
    )
    assert classify_additive_mask(function_arguments(module)[0]) is None


# --------------------------------------------------------------------------- the matcher


def test_matcher_reads_gqa_softcap_and_window_in_bf16() -> None:
    config = Attention(dtype="bf16", heads=4, kv_heads=2, scale=0.125, softcap=30.0, window=5)
    module = parse(attention_ir(config))
    found = match_attention(root_of(module))
    assert found is not None
    q, k, v = function_arguments(module)
    assert (found.q, found.k, found.v) == (q, k, v)
    assert (found.causal, found.scale, found.softcap, found.window) == (True, 0.125, 30.0, 5)


def test_matcher_reads_a_select_mask_and_mha() -> None:
    module = parse(attention_ir(Attention(kv_heads=4, mask="select", scale=0.5)))
    found = match_attention(root_of(module))
    assert found is not None
    assert (found.causal, found.scale, found.softcap, found.window) == (True, 0.5, None, None)


def test_matcher_without_mask_is_not_causal() -> None:
    module = parse(attention_ir(Attention(mask=None)))
    found = match_attention(root_of(module))
    assert found is not None and not found.causal and found.window is None


@pytest.mark.parametrize(
    "config",
    [Attention(softmax_dim=2), Attention(scale=-0.25)],
    ids=["softmax-over-queries", "negative-scale"],
)
def test_matcher_rejects(config: Attention) -> None:
    module = parse(attention_ir(config))
    assert match_attention(root_of(module)) is None
    before = str(module)
    run_pipeline(module, "builtin.module(tessera-fuse-attention)")
    assert str(module) == before


def test_fused_module_keeps_only_the_flash_op() -> None:
    module = fuse(attention_ir(Attention(dtype="bf16", softcap=50.0, window=3)))
    assert [op.name for op in walk_ops(module.operation)] == [
        "tessera.attention.flash",
        "func.return",
        "func.func",
        "builtin.module",
    ]


# --------------------------------------------------------------------------- numerics


class _EagerModule(torch.nn.Module):
    """What transformers' eager attention reads from its module."""

    def __init__(self, groups: int, head_dim: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.head_dim = head_dim


def hf_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: Attention) -> torch.Tensor:
    """transformers' eager attention with the additive mask the IR's generic computes (none
    when the IR has no mask)."""
    mask = None
    if a.mask is not None:
        tokens = q.shape[2]
        i = torch.arange(tokens)[:, None]
        j = torch.arange(tokens)[None, :]
        allowed = j <= i
        if a.window is not None:
            allowed &= i - j < a.window
        blocked = torch.full((tokens, tokens), torch.finfo(q.dtype).min, dtype=q.dtype)
        mask = torch.where(allowed, 0.0, blocked)[None, None]
    module = _EagerModule(a.heads // a.kv_heads, a.head_dim).eval()
    softcap = None if a.softcap is None else f32(a.softcap)
    out, _ = eager_attention_forward(module, q, k, v, mask, scaling=f32(a.scale), softcap=softcap)
    return out.transpose(1, 2)


def flash_semantics(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: float,
    softcap: float | None,
    window: int | None,
) -> torch.Tensor:
    """``tessera.attention.flash`` as its docstring defines it."""
    queries, keys = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # query head h reads kv head h / group
    v = v.repeat_interleave(group, dim=1)
    s = q @ k.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if causal:
        position = torch.arange(queries)[:, None] + keys - queries
        key = torch.arange(keys)[None, :]
        allowed = key <= position
        if window is not None:
            allowed &= position - key < window
        s = s.masked_fill(~allowed, -math.inf)
    return torch.softmax(s, dim=-1) @ v


@pytest.mark.parametrize(
    "config",
    [
        Attention(heads=4, kv_heads=2, scale=0.3, softcap=2.0, window=3),
        Attention(heads=4, kv_heads=1, head_dim=16, scale=0.25, mask="select", window=6),
        Attention(heads=2, kv_heads=2, scale=0.5, mask="select"),
        Attention(heads=2, kv_heads=1, scale=0.75, mask=None),
    ],
    ids=["gqa-softcap-window", "mqa-select-window", "mha-causal", "no-mask"],
)
def test_fused_attention_reproduces_the_unfused_math(config: Attention) -> None:
    module = fuse(attention_ir(config))
    (flash,) = ops_named(module, "tessera.attention.flash")
    attrs = FlashAttention(flash)
    generator = seeds.generator()
    batch, tokens = 2, 9
    q = torch.randn(batch, config.heads, tokens, config.head_dim, generator=generator).double()
    k = torch.randn(batch, config.kv_heads, tokens, config.head_dim, generator=generator).double()
    v = torch.randn(batch, config.kv_heads, tokens, config.head_dim, generator=generator).double()
    expected = hf_attention(q, k, v, config)
    fused = flash_semantics(q, k, v, attrs.causal, attrs.scale, attrs.softcap, attrs.window)
    # transformers runs the softmax in f32, the rest here in f64.
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
    # The check is sharp enough to see a window, scale or causality one step off.
    if attrs.window is not None:
        wider = flash_semantics(q, k, v, True, attrs.scale, attrs.softcap, attrs.window + 1)
        assert not torch.allclose(wider, expected, rtol=1e-4, atol=1e-4)
    other_scale = flash_semantics(
        q, k, v, attrs.causal, attrs.scale * 1.05, attrs.softcap, attrs.window
    )
    assert not torch.allclose(other_scale, expected, rtol=1e-4, atol=1e-4)
    flipped = flash_semantics(q, k, v, not attrs.causal, attrs.scale, attrs.softcap, None)
    assert not torch.allclose(flipped, expected, rtol=1e-4, atol=1e-4)
