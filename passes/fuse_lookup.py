"""tessera-fuse-lookup: the embedding gather becomes ``tessera.tensor.lookup``.

linalg.generic ins(ids [...]) → [..., D] whose body is
  tensor.extract %table[index_cast(id), linalg.index(last)]      ⇒  tessera.tensor.lookup
[→ mulf by a splat s]                                             ⇒  ... {scale = s}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir

from tessera.dialects import Lookup
from tessera.ir_types import element_type, shaped_dims
from tessera.pass_registry import NoOptions, register_pass

from .constant_values import splat_value
from .linear_match import FLOAT_TYPES
from .match import other_operand, producer, replace_with_op, rewrite_anchors, single_user

ID_TYPES = ("i32", "i64")


@dataclass(frozen=True)
class LookupMatch:
    table: ir.Value
    ids: ir.Value
    scale: float
    root: ir.Operation
    ops: tuple[ir.Operation, ...]


def _dim_map(attr: ir.Attribute, n_dims: int, positions: list[int]) -> bool:
    """``attr`` is the affine map (d0, ..., d{n_dims-1}) -> (d{positions[0]}, ...)."""
    if not isinstance(attr, ir.AffineMapAttr):
        return False
    affine_map = attr.value
    if affine_map.n_dims != n_dims or affine_map.n_symbols != 0:
        return False
    results = list(affine_map.results)
    if len(results) != len(positions):
        return False
    return all(
        isinstance(r, ir.AffineDimExpr) and r.position == p
        for r, p in zip(results, positions, strict=True)
    )


def _gathered_table(generic: ir.Operation, rank: int) -> ir.Value | None:
    """The table when the body is exactly ``yield table[index_cast(arg0), index(rank-1)]``."""
    body = generic.regions[0].blocks[0]
    ops = [o.operation for o in body.operations]
    if len(body.arguments) != 2 or len(ops) != 4 or ops[-1].name != "linalg.yield":
        return None
    extract = producer(ops[-1].operands[0]) if len(ops[-1].operands) == 1 else None
    if extract is None or extract.name != "tensor.extract" or len(extract.operands) != 3:
        return None
    table, row, column = extract.operands
    row_op, column_op = producer(row), producer(column)
    if (
        row_op is None
        or row_op.name != "arith.index_cast"
        or row_op.operands[0] != body.arguments[0]
    ):
        return None
    if column_op is None or column_op.name != "linalg.index":
        return None
    if ir.IntegerAttr(column_op.attributes["dim"]).value != rank - 1:
        return None
    if {row_op, column_op, extract, ops[-1]} != set(ops):
        return None
    return table


def match_lookup(generic: ir.Operation) -> LookupMatch | None:
    """The embedding gather anchored at ``generic``, with a following splat multiply."""
    if generic.name != "linalg.generic" or len(generic.results) != 1:
        return None
    segments = ir.DenseI32ArrayAttr(generic.attributes["operandSegmentSizes"])
    if list(segments) != [1, 1]:
        return None
    ids, gathered = generic.operands[0], generic.results[0]
    id_rank, rank = len(shaped_dims(ids)), len(shaped_dims(gathered))
    if element_type(ids) not in ID_TYPES or id_rank < 1 or rank != id_rank + 1:
        return None
    maps = list(ir.ArrayAttr(generic.attributes["indexing_maps"]))
    if len(maps) != 2:
        return None
    if not _dim_map(maps[0], rank, list(range(id_rank))) or not _dim_map(
        maps[1], rank, list(range(rank))
    ):
        return None
    if any("parallel" not in str(k) for k in ir.ArrayAttr(generic.attributes["iterator_types"])):
        return None
    if shaped_dims(gathered)[:-1] != shaped_dims(ids):
        return None
    table = _gathered_table(generic, rank)
    if (
        table is None
        or len(shaped_dims(table)) != 2
        or element_type(table) != element_type(gathered)
    ):
        return None
    if element_type(table) not in FLOAT_TYPES or shaped_dims(table)[1] != shaped_dims(gathered)[-1]:
        return None
    multiply = single_user(gathered)
    if multiply is not None and multiply.name == "arith.mulf":
        other = other_operand(multiply, gathered)
        factor = splat_value(other) if other is not None else None
        if isinstance(factor, float) and math.isfinite(factor):
            return LookupMatch(table, ids, factor, multiply, (generic, multiply))
    return LookupMatch(table, ids, 1.0, generic, (generic,))


def rewrite_lookup(found: LookupMatch) -> None:
    replace_with_op(found.root, Lookup, [found.table, found.ids], found.ops, scale=found.scale)


@register_pass("tessera-fuse-lookup")
def fuse_lookup(module: ir.Operation, options: NoOptions) -> None:
    """Fuse the embedding gather (a linalg.generic over ids whose body extracts
    table[index_cast(id), linalg.index(last)]) into tessera.tensor.lookup, folding a following
    multiply by a splat scalar (Gemma's sqrt(hidden) normaliser) into its scale."""
    rewrite_anchors(module, ["linalg.generic"], match_lookup, rewrite_lookup)
