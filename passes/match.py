"""Small, pure helpers that fusion patterns use to read use-def chains.

Each returns plain data or None (no match) and never changes the IR. Rewrites go through
``replace_and_erase`` so that matched ops that became dead disappear with the match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mlir import ir

ELEMENTWISE_UNARY = {
    "arith.negf",
    "arith.extf",
    "arith.truncf",
    "math.tanh",
    "math.exp",
    "math.erf",
    "math.sqrt",
    "math.rsqrt",
    "math.absf",
    "math.log",
    "math.cos",
    "math.sin",
}


def producer(value: ir.Value) -> ir.Operation | None:
    """The op defining ``value``, or None for a block argument."""
    if isinstance(value, ir.OpResult):
        return value.owner.operation
    return None


def producer_named(value: ir.Value, *names: str) -> ir.Operation | None:
    op = producer(value)
    return op if op is not None and op.name in names else None


def users(value: ir.Value) -> list[ir.Operation]:
    return [use.owner.operation for use in value.uses]


def has_one_use(value: ir.Value) -> bool:
    uses = list(value.uses)
    return len(uses) == 1


def used_only_by(value: ir.Value, allowed: Iterable[ir.Operation]) -> bool:
    """True when every user of ``value`` is one of ``allowed`` (a matched chain's ops)."""
    allowed_ops = list(allowed)
    return all(any(user == op for op in allowed_ops) for user in users(value))


def int_attr(op: ir.Operation, name: str) -> int | None:
    attr = op.attributes[name] if name in op.attributes else None
    return int(attr.value) if isinstance(attr, ir.IntegerAttr) else None


def i64_array_attr(op: ir.Operation, name: str) -> list[int] | None:
    if name not in op.attributes:
        return None
    attr = op.attributes[name]
    return [int(v) for v in attr] if isinstance(attr, ir.DenseI64ArrayAttr) else None


def shape(value: ir.Value) -> list[int | None]:
    """Dims of a ranked tensor (None for dynamic), [] for scalars."""
    type_ = value.type
    if not isinstance(type_, ir.RankedTensorType):
        return []
    return [None if type_.is_dynamic_dim(i) else type_.get_dim_size(i) for i in range(type_.rank)]


def element_type(value: ir.Value) -> str:
    type_ = value.type
    return str(type_.element_type if isinstance(type_, ir.ShapedType) else type_)


def scalar_constant(value: ir.Value) -> float | int | None:
    """The number a scalar ``arith.constant`` holds, or None."""
    op = producer_named(value, "arith.constant")
    if op is None:
        return None
    attr = op.attributes["value"]
    if isinstance(attr, ir.FloatAttr):
        return float(attr.value)
    if isinstance(attr, ir.IntegerAttr):
        return int(attr.value)
    return None


def splat_value(value: ir.Value) -> float | int | None:
    """The single number every element of ``value`` holds, looking through fills, splat
    constants, broadcasts and reshapes; None when ``value`` is not a splat."""
    op = producer(value)
    while op is not None and op.name in (
        "linalg.broadcast",
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.cast",
    ):
        op = producer(op.operands[0])
    if op is None:
        return None
    if op.name == "linalg.fill":
        return scalar_constant(op.operands[0])
    if op.name == "arith.constant":
        attr = op.attributes["value"]
        if isinstance(attr, ir.DenseElementsAttr) and attr.is_splat:
            splat = attr.get_splat_value()
            return float(splat.value) if isinstance(splat, ir.FloatAttr) else int(splat.value)
        if isinstance(attr, ir.FloatAttr | ir.IntegerAttr):
            return attr.value
    return None


def dense_constant(value: ir.Value) -> list[float] | None:
    """The elements (flattened) of an ``arith.constant dense<...>`` tensor, or None."""
    op = producer_named(value, "arith.constant")
    if op is None:
        return None
    attr = op.attributes["value"]
    if not isinstance(attr, ir.DenseElementsAttr):
        return None
    count = 1
    for dim in shape(value):
        if dim is None:
            return None
        count *= dim
    if attr.is_splat:
        splat = attr.get_splat_value()
        return [float(splat.value)] * count
    return [float(attr[i]) for i in range(count)]


def through_reshapes(value: ir.Value) -> ir.Value:
    """Follows ``tensor.expand_shape``/``collapse_shape`` back to their source."""
    op = producer(value)
    while op is not None and op.name in ("tensor.expand_shape", "tensor.collapse_shape"):
        value = op.operands[0]
        op = producer(value)
    return value


def reassociation(op: ir.Operation) -> list[list[int]]:
    """The reassociation groups of an expand_shape/collapse_shape."""
    return [[int(i) for i in group] for group in op.attributes["reassociation"]]


def matmul_maps(op: ir.Operation) -> list[str] | None:
    """The indexing maps of a linalg.matmul/batch_matmul as text, None when default."""
    if "indexing_maps" not in op.attributes:
        return None
    return [str(m) for m in op.attributes["indexing_maps"]]


def is_transpose_b_matmul(op: ir.Operation) -> bool:
    """A 2-D ``linalg.matmul`` computing A[m,k]·B[n,k]ᵀ through its indexing maps."""
    if op.name != "linalg.matmul":
        return False
    maps = matmul_maps(op)
    if maps is None or len(maps) != 3:
        return False
    normalised = [m.replace(" ", "") for m in maps]
    return normalised == [
        "affine_map<(d0,d1,d2)->(d0,d2)>",
        "affine_map<(d0,d1,d2)->(d1,d2)>",
        "affine_map<(d0,d1,d2)->(d0,d1)>",
    ]


def is_zero_fill(value: ir.Value) -> bool:
    return splat_value(value) == 0


def replace_and_erase(
    root: ir.Operation, replacement: Sequence[ir.Value], matched: Iterable[ir.Operation]
) -> None:
    """Replaces ``root``'s results and erases every matched op left without users
    (users before producers)."""
    for old, new in zip(root.results, replacement, strict=True):
        old.replace_all_uses_with(new)
    pending = [root, *[op for op in matched if op != root]]
    erased = True
    while erased:
        erased = False
        for op in list(pending):
            if all(not list(r.uses) for r in op.results):
                op.erase()
                pending.remove(op)
                erased = True
