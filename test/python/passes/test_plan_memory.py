"""Symbolic shapes and tessera-plan-memory: the polynomial algebra, the shape rules, and the
plan's invariants on every tiny Gemma (f32 and bf16, as the mid-level IR and as the CUDA target
prepares it), checked by evaluating the plan's expressions at several symbol values."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import pytest
import torch
from mlir import ir

from tessera.context import make_context, parse_module
from tessera.errors import PassError
from tessera.frontend import trace
from tessera.lowering.inline_regions import inline_region
from tessera.models.tiny import CONFIGS, tiny_gemma
from tessera.passes.plan_memory import (
    ALIGNMENT,
    ARENA_ATTR,
    BUFFERS_ATTR,
    MemoryPlan,
    PlannedValue,
    memory_plan,
)
from tessera.passes.shape_exprs import Poly, shape_exprs
from tessera.pipeline import run_pipeline

ENVS = [{"B": 1, "S": 1}, {"B": 1, "S": 7}, {"B": 3, "S": 5}, {"B": 2, "S": 64}, {"B": 5, "S": 999}]
# Every tiny configuration in both dtypes; gemma1-small (the benchmark size, the same graph as
# gemma1-mqa at larger widths) in f32 only, since tracing it takes most of this file's time.
MODELS = [(name, dtype) for name in CONFIGS for dtype in ("f32", "bf16")]
MODELS.remove(("gemma1-small", "bf16"))
CASES = [(name, dtype, form) for name, dtype in MODELS for form in ("mid", "cuda")]


# --------------------------------------------------------------------------- polynomials


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("S*B + 2*S - S", "B*S + S"),
        ("64*(B*S) + 0*S", "64*B*S"),
        ("cdiv(320*B*S, 256)*256", "256*cdiv(5*B*S, 4)"),
        ("cdiv(8*S, 4)", "2*S"),
        ("(6*S)//4", "((3*S)//2)"),
        ("S % 4 + 4*S % 2", "(S%4)"),
        ("min(S, S + 1)", "S"),
        ("max(6, S)", "max(6, S)"),
        ("3 - S", "-S + 3"),
        ("2*3 + 1", "7"),
    ],
)
def test_expressions_print_canonically(text: str, canonical: str) -> None:
    poly = Poly.parse(text)
    assert str(poly) == canonical
    assert Poly.parse(canonical) == poly
    for env in ENVS:
        assert poly.evaluate(env) == Poly.parse(text).evaluate(env)


@pytest.mark.parametrize(
    ("big", "small", "covers"),
    [
        ("B*S*64", "S*64", True),
        ("S*64", "B*S*64", False),  # B > 1 makes the first smaller
        ("2*S", "S + 1", True),  # S >= 1
        ("2*S", "S + 2", False),  # S = 1
        ("256*cdiv(B*S, 2)", "128*B*S", True),  # an aligned slice holds its value
        ("832*B*S - 256*cdiv(B*S, 2)", "192*B*S", True),  # the tail of a split slice
        ("832*B*S - 256*cdiv(B*S, 2)", "704*B*S", False),  # 576 < 704 at B = S = 1
        ("min(S, 6)", "S", False),
    ],
)
def test_covers_holds_for_every_symbol_value(big: str, small: str, covers: bool) -> None:
    assert Poly.parse(big).covers(Poly.parse(small)) is covers
    if covers:  # a claim of "always >=" must hold wherever we look
        for b, s in itertools.product(range(1, 9), range(1, 40)):
            env = {"B": b, "S": s}
            assert Poly.parse(big).evaluate(env) >= Poly.parse(small).evaluate(env)


# --------------------------------------------------------------------------- shapes

SHAPES = """
func.func @f(%ids: tensor<?x?xi64> {tessera.input = "input_ids"},
             %table: tensor<100x64xf32> {tessera.weight = "t"},
             %w: tensor<96x64xf32> {tessera.weight = "w"}) -> tensor<?x96xf32>
    attributes {tessera.dims = {input_ids = ["B", "S"]}} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %x = "tessera.tensor.lookup"(%table, %ids)
      : (tensor<100x64xf32>, tensor<?x?xi64>) -> tensor<?x?x64xf32>
  %p = "tessera.mma.proj"(%x, %w) {transpose_w = true}
      : (tensor<?x?x64xf32>, tensor<96x64xf32>) -> tensor<?x?x96xf32>
  %B = tensor.dim %x, %c0 : tensor<?x?x64xf32>
  %S = tensor.dim %p, %c1 : tensor<?x?x96xf32>
  %h = tensor.expand_shape %p [[0], [1], [2, 3]] output_shape [%B, %S, 4, 24]
      : tensor<?x?x96xf32> into tensor<?x?x4x24xf32>
  %S2 = arith.addi %S, %c2 : index
  %half = arith.ceildivsi %S2, %c2 : index
  %e = tensor.empty(%B, %half) : tensor<?x4x?x24xf32>
  %t = tensor.empty(%B, %S) : tensor<?x4x?x24xf32>
  %tr = linalg.transpose ins(%h : tensor<?x?x4x24xf32>) outs(%t : tensor<?x4x?x24xf32>)
      permutation = [0, 2, 1, 3]
  %c = tensor.collapse_shape %p [[0, 1], [2]] : tensor<?x?x96xf32> into tensor<?x96xf32>
  %y = arith.mulf %c, %c : tensor<?x96xf32>
  return %y : tensor<?x96xf32>
}
"""


def test_shape_exprs_follow_every_rule() -> None:
    module = parse_module(SHAPES, make_context(), "shapes.mlir")
    function = module.body.operations[0].operation
    dims = {v.get_name(): d for v, d in shape_exprs(function).items()}
    assert dims["%arg0"] == ("B", "S")
    assert dims["%0"] == ("B", "S", "64")  # lookup: ids' dims + the table's width
    assert dims["%1"] == ("B", "S", "96")  # proj: x's leading dims + w's N
    assert dims["%expanded"] == ("B", "S", "4", "24")
    assert dims["%4"] == ("B", "4", "cdiv(S + 2, 2)", "24")  # index arithmetic
    assert dims["%transposed"] == ("B", "4", "S", "24")  # linalg: its outs
    assert dims["%collapsed"] == ("B*S", "96")
    assert dims["%6"] == ("B*S", "96")  # elementwise: its operands


def test_shapes_flow_through_regions() -> None:
    text = """
    func.func @f(%x: tensor<?x8xf32> {tessera.input = "x"}) -> tensor<?x8xf32>
        attributes {tessera.dims = {x = ["N", 8]}} {
      %r = "tessera.region"(%x) ({
      ^bb0(%a: tensor<?x8xf32>):
        %s = arith.addf %a, %a : tensor<?x8xf32>
        "tessera.yield"(%s) : (tensor<?x8xf32>) -> ()
      }) {label = "model.layers.0"} : (tensor<?x8xf32>) -> tensor<?x8xf32>
      return %r : tensor<?x8xf32>
    }"""
    module = parse_module(text, make_context(), "region.mlir")
    dims = shape_exprs(module.body.operations[0].operation)
    assert sorted(set(dims.values())) == [("N", "8")]
    assert len(dims) == 4  # %x, the block argument, the sum and the region's result


def test_a_value_without_a_rule_is_reported_at_its_op() -> None:
    text = """
    func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
      %y = "test.opaque"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      return %y : tensor<?x8xf32>
    }"""
    module = parse_module(text, make_context(), "opaque.mlir")
    with pytest.raises(PassError) as caught:
        shape_exprs(module.body.operations[0].operation)
    assert "cannot express the dims of %0" in caught.value.message
    assert caught.value.location is not None and caught.value.location.line == 3


def test_a_size_loaded_at_run_time_is_reported() -> None:
    text = """
    func.func @f(%x: tensor<?xf32>, %n: index) -> tensor<?xf32> {
      %e = tensor.empty(%n) : tensor<?xf32>
      return %e : tensor<?xf32>
    }"""
    module = parse_module(text, make_context(), "size.mlir")
    with pytest.raises(PassError, match="the size %arg1 \\(made by a block argument\\)"):
        shape_exprs(module.body.operations[0].operation)


# --------------------------------------------------------------------------- the tiny models


@functools.cache
def _mid_level(name: str, dtype: str) -> str:
    """A tiny Gemma's forward after tessera-fuse, its regions inlined, as text."""
    context = make_context()
    with context:
        model = tiny_gemma(name, {"f32": torch.float32, "bf16": torch.bfloat16}[dtype])
        module = trace(model, context).module
        run_pipeline(module, "builtin.module(tessera-fuse)")
        for op in list(module.body.operations[0].regions[0].blocks[0].operations):
            if op.operation.name == "tessera.region":
                inline_region(op.operation)
        return str(module)


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def model_ir(request: pytest.FixtureRequest) -> Iterator[ir.Operation]:
    """The forward function as the pass meets it: the mid-level IR with its regions inlined
    ("mid"), or that IR as the CUDA target prepares it, elementwise code fused into
    linalg.generics ("cuda")."""
    name, dtype, form = request.param
    context = make_context()
    module = parse_module(_mid_level(name, dtype), context, f"{name}-{dtype}.mlir")
    if form == "cuda":
        from tessera.lowering.cuda.gpu_programs import PREPARE

        run_pipeline(module, PREPARE, verify_each=False)
    function = module.body.operations[0].operation
    with context:
        function.attributes["tessera.dims"] = ir.DictAttr.get(
            {"input_ids": ir.ArrayAttr.get([ir.StringAttr.get("B"), ir.StringAttr.get("S")])}
        )
        yield function


def _bytes(value: PlannedValue, env: dict[str, int]) -> int:
    return Poly.parse(value.bytes).evaluate(env)


def _offset(value: PlannedValue, env: dict[str, int]) -> int:
    return Poly.parse(str(value.offset)).evaluate(env)


def _overwrites(later: PlannedValue, earlier: PlannedValue) -> bool:
    """``later`` is written in place over ``earlier`` at the op where ``earlier`` dies."""
    return (
        later.kind == "inplace" and later.first == earlier.last and later.offset == earlier.offset
    )


def test_live_values_never_share_bytes(model_ir: ir.Operation) -> None:
    plan = memory_plan(model_ir)
    arena = [v for v in plan.values if v.in_arena]
    assert arena, "the models have intermediates"
    for env in ENVS:
        for a, b in itertools.combinations(arena, 2):
            if a.last < b.first or b.last < a.first or _overwrites(b, a) or _overwrites(a, b):
                continue
            a0, b0 = _offset(a, env), _offset(b, env)
            disjoint = a0 + _bytes(a, env) <= b0 or b0 + _bytes(b, env) <= a0
            assert disjoint, f"{a.label} and {b.label} overlap at {env}"


def test_offsets_are_aligned_and_the_arena_holds_everything(model_ir: ir.Operation) -> None:
    plan = memory_plan(model_ir)
    for env in ENVS:
        size = plan.arena_size(env)
        assert size % ALIGNMENT == 0
        for value in plan.values:
            if value.in_arena:
                assert _offset(value, env) % ALIGNMENT == 0, value.label
                assert _offset(value, env) + _bytes(value, env) <= size, value.label
        assert plan.peak_bytes(env) <= size


def test_the_arena_stays_near_the_peak(model_ir: ir.Operation) -> None:
    """Reuse works: the arena is within 2x of the bytes live at the busiest op (a guard
    against regressions; the tiny models plan at 1.0-1.7x)."""
    plan = memory_plan(model_ir)
    env = {"B": 2, "S": 100}
    assert plan.arena_size(env) <= 2 * plan.peak_bytes(env)


def _root(value: ir.Value) -> ir.Value:
    while isinstance(value, ir.OpResult) and value.owner.name in (
        "tensor.expand_shape",
        "tensor.collapse_shape",
    ):
        value = value.owner.operands[0]
    return value


def test_in_place_only_where_legal(model_ir: ir.Operation) -> None:
    plan = memory_plan(model_ir)
    ops = [v.operation for v in model_ir.regions[0].blocks[0].operations]
    planned = {(v.first, v.result): v for v in plan.values}
    defined = {r: (i, r.result_number) for i, op in enumerate(ops) for r in op.results}
    inplace = [v for v in plan.values if v.kind == "inplace"]
    assert inplace, "the residual adds and norms are written in place"
    for value in inplace:
        op = ops[value.first]
        assert op.name.startswith(("arith.", "math.")) or op.name in (
            "tessera.norm.rms",
            "tessera.rope.apply",
            "linalg.generic",
        ), op.name
        assert value.of is not None
        source = _root(op.operands[value.of])
        assert source in defined, "never over a function argument or a view of one"
        over = planned[defined[source]]
        assert over.in_arena and over.last == value.first, f"{over.label} lives on"
        assert over.offset == value.offset and over.dtype == value.dtype
        for env in ENVS:
            assert _bytes(over, env) == _bytes(value, env)


def test_views_outputs_and_constants(model_ir: ir.Operation) -> None:
    plan = memory_plan(model_ir)
    kinds = {v.kind for v in plan.values}
    assert {"arena", "view", "output"} <= kinds
    for value in plan.values:
        if value.kind == "view":
            assert value.op in ("tensor.expand_shape", "tensor.collapse_shape")
        if value.kind == "constant":
            assert value.op == "arith.constant"
    (output,) = [v for v in plan.values if v.kind == "output"]
    assert output.name == "logits" and output.shape[:2] == ("B", "S")
    assert not any(v.op == "tensor.empty" for v in plan.values)


def test_every_tensor_has_dims_over_the_batch_and_sequence(model_ir: ir.Operation) -> None:
    dims = shape_exprs(model_ir)
    symbols = set()
    for shape in dims.values():
        for dim in shape:
            symbols |= {f for m, _ in Poly.parse(dim).terms for f in m}
    assert symbols <= {"B", "S"}
    assert len(dims) == sum(
        isinstance(r.type, ir.RankedTensorType)
        for op in model_ir.regions[0].blocks[0].operations
        for r in op.results
    ) + len(model_ir.regions[0].blocks[0].arguments)


def test_the_pass_writes_the_plan_onto_the_ir(model_ir: ir.Operation) -> None:
    plan = memory_plan(model_ir)
    module = model_ir.parent
    run_pipeline(module, "builtin.module(tessera-plan-memory)")
    assert str(ir.StringAttr(model_ir.attributes[ARENA_ATTR]).value) == plan.arena_bytes
    for op in model_ir.regions[0].blocks[0].operations:
        tensors = [r for r in op.results if isinstance(r.type, ir.RankedTensorType)]
        if op.name == "tensor.empty" or not tensors:
            assert BUFFERS_ATTR not in op.attributes, op.name
            continue
        entries = [ir.DictAttr(a) for a in ir.ArrayAttr(op.attributes[BUFFERS_ATTR])]
        assert len(entries) == len(op.results)
        assert all("kind" in entry for entry in entries)


def test_describe_lists_every_value(model_ir: ir.Operation) -> None:
    plan: MemoryPlan = memory_plan(model_ir)
    table = plan.describe({"B": 2, "S": 16})
    assert table.splitlines()[0].split()[:3] == ["value", "op", "kind"]
    assert len(table.splitlines()) == len(plan.values) + 2
    assert f"({plan.arena_bytes})" in table.splitlines()[-1]
