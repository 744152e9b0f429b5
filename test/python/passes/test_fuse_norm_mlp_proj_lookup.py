"""tessera-fuse-lookup: the matcher, the rewrite, and the fused op's numerics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import seeds
import torch
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
    run,
)

from tessera.passes.fuse_lookup import match_lookup

PASS = "tessera-fuse-lookup"


def lookup_text(
    id_dims: Sequence[Dim],
    dtype: str,
    id_dtype: str = "i64",
    *,
    vocab: int = 11,
    width: int = 8,
    scale: float | None = None,
    scale_first: bool = False,
    dense_scale: bool = False,
) -> str:
    """table[ids] (· scale) as a front end writes an embedding."""
    b = Builder("embed")
    ids = b.arg("ids", id_dims, id_dtype)
    table = b.arg("table", [vocab, width], dtype)
    y = b.gather(table, ids)
    if scale is not None:
        factor = b.splat(scale, y.dims, dtype, dense=dense_scale)
        y = b.op("arith.mulf", factor, y) if scale_first else b.op("arith.mulf", y, factor)
    return b.text(y)


def gemma_normaliser(width: int, dtype: str) -> float:
    """sqrt(hidden) rounded to the activation dtype, as Gemma computes it."""
    return float(
        torch.tensor(math.sqrt(width), dtype={"f32": torch.float32, "bf16": torch.bfloat16}[dtype])
    )


POSITIVE = [
    # (id dims, dtype, id dtype, keyword arguments)
    (["B", "S"], "f32", "i64", {}),
    (["B", "S"], "bf16", "i64", {"scale": gemma_normaliser(8, "bf16")}),  # Gemma
    ([2, 5], "f32", "i32", {"scale": 0.5, "scale_first": True, "dense_scale": True}),
    (["S"], "bf16", "i32", {"width": 12, "scale": gemma_normaliser(12, "bf16")}),
]


@pytest.mark.parametrize(("dims", "dtype", "id_dtype", "variant"), POSITIVE)
def test_embedding_gather_is_fused(dims: list, dtype: str, id_dtype: str, variant: dict) -> None:
    module = run(lookup_text(dims, dtype, id_dtype, **variant), PASS)
    lookup = only_op(module, "tessera.tensor.lookup")
    ids, table = block_arguments(module)
    assert list(lookup.operands) == [table, ids]
    assert attr_float(lookup, "scale") == variant.get("scale", 1.0)
    assert not ops_named(module, "linalg.generic")
    assert not ops_named(module, "arith.mulf")


@pytest.mark.parametrize(("dims", "dtype", "id_dtype", "variant"), POSITIVE)
def test_fused_lookup_computes_the_unfused_chain(
    dims: list, dtype: str, id_dtype: str, variant: dict
) -> None:
    text = lookup_text(dims, dtype, id_dtype, **variant)
    vocab = variant.get("vocab", 11)
    sizes = [d if isinstance(d, int) else s for d, s in zip(dims, (2, 3), strict=False)]
    generator = seeds.generator()
    ids = torch.randint(0, vocab, sizes, generator=generator)
    table = torch.randn(vocab, variant.get("width", 8), generator=generator)
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "i64": torch.int64, "i32": torch.int32}
    inputs = [ids.to(dtypes[id_dtype]), table.to(dtypes[dtype])]
    assert_fusion_preserves(text, PASS, inputs, rtol=0.0)


def test_matcher_reads_table_ids_and_scale() -> None:
    module = parse(lookup_text(["B", "S"], "bf16", scale=8.0))
    found = match_lookup(first_op(module, "linalg.generic"))
    ids, table = block_arguments(module)
    assert found is not None and found.table == table and found.ids == ids
    assert found.scale == 8.0 and found.root.name == "arith.mulf"


def test_no_scale_when_the_factor_is_not_a_splat() -> None:
    b = Builder("embed")
    ids = b.arg("ids", ["B", "S"], "i64")
    table = b.arg("table", [11, 8], "f32")
    factor = b.arg("factor", ["B", "S", 8], "f32")
    module = run(b.text(b.op("arith.mulf", b.gather(table, ids), factor)), PASS)
    lookup = only_op(module, "tessera.tensor.lookup")
    assert attr_float(lookup, "scale") == 1.0
    assert ops_named(module, "arith.mulf")


def _gather_with_body(body: list[str], id_map: str = "(d0, d1)") -> str:
    b = Builder("embed")
    ids = b.arg("ids", [4, 4], "i64")
    table = b.arg("table", [11, 8], "f32")
    init = b.empty([4, 4, 8], "f32")
    out = Val("%g", (4, 4, 8), "f32")
    b.emit(
        f"%g = linalg.generic {{indexing_maps = [affine_map<(d0, d1, d2) -> {id_map}>, "
        "affine_map<(d0, d1, d2) -> (d0, d1, d2)>], "
        'iterator_types = ["parallel", "parallel", "parallel"]} '
        f"ins({ids.name} : {ids.type}) outs({init.name} : {init.type}) {{"
    )
    b.emit("^bb0(%id: i64, %out: f32):")
    for line in body:
        b.emit("  " + line.replace("TABLE", f"{table.name}").replace("TYPE", table.type))
    b.emit(f"}} -> {out.type}")
    return b.text(out)


GATHER = [
    "%row = arith.index_cast %id : i64 to index",
    "%col = linalg.index 2 : index",
    "%elem = tensor.extract TABLE[%row, %col] : TYPE",
    "linalg.yield %elem : f32",
]
NEGATIVE = {
    "column_is_not_the_last_loop": (
        [*GATHER[:1], "%col = linalg.index 1 : index", *GATHER[2:]],
        "(d0, d1)",
    ),
    "row_is_not_the_id": (
        [
            "%one = arith.constant 1 : index",
            *GATHER[:1],
            "%shifted = arith.addi %row, %one : index",
            GATHER[1],
            "%elem = tensor.extract TABLE[%shifted, %col] : TYPE",
            GATHER[3],
        ],
        "(d0, d1)",
    ),
    "ids_are_read_transposed": (GATHER, "(d1, d0)"),
    "table_is_indexed_column_first": (
        [*GATHER[:2], "%elem = tensor.extract TABLE[%col, %row] : TYPE", GATHER[3]],
        "(d0, d1)",
    ),
}


@pytest.mark.parametrize("reason", sorted(NEGATIVE))
def test_no_fusion(reason: str) -> None:
    body, id_map = NEGATIVE[reason]
    text = _gather_with_body(body, id_map)
    before = str(parse(text))
    assert str(run(text, PASS)) == before


def test_well_formed_body_helper_fuses() -> None:
    """The negative cases differ from a gather that fuses in one line each."""
    assert only_op(run(_gather_with_body(GATHER), PASS), "tessera.tensor.lookup")
