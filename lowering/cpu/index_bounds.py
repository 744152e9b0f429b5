"""The bound an integer input of an entry must respect because the IR indexes memory with it.

The runtime rejects out-of-range values before the compiled code reads with them, so each
integer input that reaches an index (token ids reach the embedding lookup) needs a range. It
is derived here by following the input's values through the IR: ops that only rearrange them
keep an exact bound, anything that computes with them, or control flow, leaves none.
"""

from __future__ import annotations

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import LoweringError

# Ops whose result holds exactly the values of their (first) operand, rearranged: an index
# bound on the result is a bound on the operand.
_VALUE_PRESERVING = frozenset(
    {
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.extract_slice",
        "tensor.cast",
        "tensor.reshape",
        "linalg.broadcast",
        "linalg.transpose",
        "tensor.extract",
        "arith.extsi",
    }
)
# Ops with a body whose block argument i is (an element of) operand i.
_ELEMENT_BODIES = frozenset({"linalg.generic", "linalg.map", "tessera.region"})
_TERMINATORS = frozenset({"linalg.yield", "tessera.yield", "scf.yield"})
_SHAPE_QUERIES = frozenset({"tensor.dim", "memref.dim", "tensor.rank", "memref.rank"})


def _is_linalg_named(op: ir.Operation) -> bool:
    """A named linalg op (matmul, broadcast, fill, ...): its body computes on elements and
    indexes nothing with them."""
    return op.name.startswith("linalg.") and op.name not in _ELEMENT_BODIES


def is_wide_integer(type_: ir.Type) -> bool:
    """An index or an integer wider than i1 (or a shaped type of one): values that may index
    memory."""
    element = type_.element_type if isinstance(type_, ir.ShapedType) else type_
    if isinstance(element, ir.IndexType):
        return True
    return isinstance(element, ir.IntegerType) and element.width > 1


def _index_sinks(value: ir.Value) -> list[tuple[int | None, ir.Operation]]:
    """Where the values of ``value`` (or values computed from them) index memory, each with
    the exclusive bound the index must respect, or None where no bound on ``value`` follows
    (the index is computed from it, or its target has a dynamic size)."""
    sinks: list[tuple[int | None, ir.Operation]] = []
    work: list[tuple[ir.Value, bool]] = [(value, True)]
    seen: set[tuple[ir.Value, bool]] = set()
    while work:
        current, exact = work.pop()
        if (current, exact) in seen:
            continue
        seen.add((current, exact))
        for use in current.uses:
            op = use.owner.operation
            n = use.operand_number
            if op.name == "tessera.tensor.lookup" and n == 1:
                table = ir.RankedTensorType(op.operands[0].type)
                rows = None if table.is_dynamic_dim(0) else table.get_dim_size(0)
                sinks.append((rows if exact else None, op))
            elif op.name in _SHAPE_QUERIES:
                continue  # yields the tensor's sizes, not its values
            elif op.name in ("arith.index_cast", "arith.index_castui"):
                sinks += _cast_sinks(op.results[0], exact)
            elif op.name in ("func.call", "func.call_indirect"):
                sinks.append((None, op))
            elif op.name in _TERMINATORS:
                parent = op.parent
                assert parent is not None, "a terminator sits in a region of its parent op"
                parent = parent.operation
                work += [(r, False) for r in parent.results if is_wide_integer(r.type)]
            elif op.regions and op.name not in _ELEMENT_BODIES and not _is_linalg_named(op):
                sinks.append((None, op))  # a loop or branch: where the values go is unknown
            else:
                body = op.regions[0].blocks[0].arguments if op.name in _ELEMENT_BODIES else []
                if n < len(body):
                    work.append((body[n], exact))
                keeps = exact and op.name in _VALUE_PRESERVING and n == 0
                work += [(r, keeps) for r in op.results if is_wide_integer(r.type)]
    return sinks


def _cast_sinks(index: ir.Value, exact: bool) -> list[tuple[int | None, ir.Operation]]:
    sinks: list[tuple[int | None, ir.Operation]] = []
    for use in index.uses:
        op = use.owner.operation
        n = use.operand_number
        if op.name in ("tensor.extract", "memref.load") and n >= 1 and exact:
            target = ir.ShapedType(op.operands[0].type)
            axis = n - 1
            sinks.append((None if target.is_dynamic_dim(axis) else target.get_dim_size(axis), op))
        else:
            sinks.append((None, op))
    return sinks


def derived_range(name: str, value: ir.Value, entry: str) -> tuple[int, int] | None:
    """[0, bound) of input ``name`` (``value``, its block argument in ``@entry``) when its
    values index memory, None when they index nothing; an index whose bound cannot be derived
    is an error naming it."""
    sinks = _index_sinks(value)
    if not sinks:
        return None
    for bound, op in sinks:
        if bound is None:
            where = source_location(op.location)
            raise LoweringError(
                f"input '{name}' of @{entry} indexes memory through '{op.name}'"
                f"{f' at {where}' if where else ''}, and no bound on its values follows from "
                f"the IR; give its valid range: ranges={{'{name}': (low, high)}}"
            )
    return (0, min(bound for bound, _ in sinks if bound is not None))
