"""Small, pure helpers that fusion patterns use to read use-def chains.

Each returns plain data or None (no match) and never changes the IR. Rewrites go through
``replace_and_erase`` so that matched ops that became dead disappear with the match.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mlir import ir

from tessera.ir_walk import walk_ops

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
                pending.remove(op)  # before erase: an erased op can no longer be compared
                op.erase()
                erased = True


def single_user(value: ir.Value) -> ir.Operation | None:
    """The op using ``value``, when it has exactly one use."""
    found = users(value)
    return found[0] if len(found) == 1 else None


def other_operand(op: ir.Operation, value: ir.Value) -> ir.Value | None:
    """For a binary op with ``value`` as exactly one of its operands, the other one."""
    if len(op.operands) != 2:
        return None
    lhs, rhs = op.operands
    if lhs == rhs or value not in (lhs, rhs):
        return None
    return rhs if lhs == value else lhs


# Ops with no side effects that only feed a matched chain: constants, splats, empty tensors,
# shape arithmetic, reshapes and broadcasts. A rewrite erases those left without users.
_SWEEPABLE_PREFIXES = ("arith.", "math.")
_SWEEPABLE = frozenset(
    {
        "tensor.dim",
        "tensor.empty",
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.cast",
        "linalg.fill",
        "linalg.broadcast",
    }
)


def _sweepable(op: ir.Operation) -> bool:
    return op.name in _SWEEPABLE or op.name.startswith(_SWEEPABLE_PREFIXES)


def erase_unused(candidates: Iterable[ir.Operation]) -> None:
    """Erases every side-effect-free op among ``candidates`` that has no users, then its
    producers that became unused in turn (constants, fills, empty tensors, reshapes, ...)."""
    pending = [op for op in candidates if _sweepable(op)]
    while pending:
        op = pending.pop()
        if any(list(result.uses) for result in op.results):
            continue
        # Drop duplicates first: once erased, the op must not be touched again.
        pending = [other for other in pending if other != op]
        feeding = [producer(value) for value in op.operands]
        op.erase()
        pending += [p for p in feeding if p is not None and _sweepable(p)]


def replace_and_sweep(
    root: ir.Operation, replacement: Sequence[ir.Value], matched: Iterable[ir.Operation]
) -> None:
    """Replaces ``root``'s results, erases every matched op left without users (users before
    producers), then ``erase_unused`` on what fed them, so that the splats, empty tensors and
    reshapes of a fused chain go with it.

    An erased op's Python handles are invalidated (comparing one raises), so each op is taken
    out of the pending list before it is erased."""
    pending: list[ir.Operation] = []
    for op in [root, *matched]:
        if not any(op == seen for seen in pending):
            pending.append(op)
    feeding: list[ir.Operation] = []
    for op in pending:
        for value in op.operands:
            found = producer(value)
            if found is not None and not any(found == m for m in pending):
                feeding.append(found)
    for old, new in zip(root.results, replacement, strict=True):
        old.replace_all_uses_with(new)
    while True:
        dead = next(
            (i for i, op in enumerate(pending) if all(not list(r.uses) for r in op.results)),
            None,
        )
        if dead is None:
            break
        pending.pop(dead).erase()
    erase_unused(feeding)


def rewrite_anchors(
    module: ir.Operation,
    anchors: Iterable[str],
    match: Callable[[ir.Operation], object | None],
    rewrite: Callable[[Any], None],
) -> int:
    """Runs ``match`` on every op named in ``anchors`` (post-order) and ``rewrite`` on each
    match; returns the number of rewrites.

    The ops are listed before any rewrite, so a rewrite may erase its anchor, ops listed
    before it (its producers) and ops that are not anchors, but never a later anchor."""
    names = frozenset(anchors)
    count = 0
    for op in [o for o in walk_ops(module) if o.name in names]:
        found = match(op)
        if found is None:
            continue
        rewrite(found)
        count += 1
    return count


# --------------------------------------------------------------------------- added for the
# attention and rope fusions: splat operands, dense elements of any type, reshape views


def split_splat(op: ir.Operation) -> tuple[ir.Value, float | int] | None:
    """For a binary op with exactly one splat operand: the other operand and the number."""
    if len(op.operands) != 2:
        return None
    first, second = splat_value(op.operands[0]), splat_value(op.operands[1])
    if (first is None) == (second is None):
        return None
    if second is not None:
        return op.operands[0], second
    assert first is not None
    return op.operands[1], first


def _bf16(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits << 16))[0])


def _f16(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits))[0])


def splat_element(attr: ir.DenseElementsAttr) -> float | int:
    """The one element of a splat DenseElementsAttr (i1 reads as 0/1)."""
    splat = attr.get_splat_value()
    if isinstance(splat, ir.BoolAttr):
        return int(splat.value)
    if isinstance(splat, ir.FloatAttr):
        return float(splat.value)
    return int(splat.value)


def dense_elements(attr: ir.Attribute) -> list[float | int]:
    """Every element (row-major) of a DenseElementsAttr of int or float elements; i1 reads
    as 0/1.

    The bindings cannot read bf16/f16 elements, so those are decoded from the attribute's
    text: a literal list (non-finite values as hex bit patterns) or, for large constants,
    one hex string of the little-endian element bytes."""
    if not isinstance(attr, ir.DenseElementsAttr):
        raise TypeError(f"not a dense elements attribute: {attr}")
    type_ = attr.type
    count = math.prod(type_.get_dim_size(i) for i in range(type_.rank))
    element = type_.element_type
    if attr.is_splat:
        return [splat_element(attr)] * count
    if not isinstance(element, ir.BF16Type | ir.F16Type):
        return [attr[i] for i in range(count)]
    decode = _bf16 if isinstance(element, ir.BF16Type) else _f16
    text = str(attr)
    payload = text[text.index("<") + 1 : text.rindex(">", 0, text.rindex(" : "))].strip()
    if payload.startswith('"0x'):
        raw = bytes.fromhex(payload[3:-1])
        return [decode(int.from_bytes(raw[i : i + 2], "little")) for i in range(0, len(raw), 2)]
    tokens = payload.replace("[", " ").replace("]", " ").replace(",", " ").split()
    return [decode(int(t, 16)) if t.startswith("0x") else float(t) for t in tokens]


# A reshape chain relates its source's dims to its result's dims as consecutive blocks: each
# block is (source dims, result dims) with equal element counts, e.g. collapsing [B, H, S, D]
# by [[0, 1], [2], [3]] gives ((0, 1), (0,)), ((2,), (1,)), ((3,), (2,)). Composing two
# relations merges blocks that share middle dims; the blocks are then split again where the
# sizes prove it, so collapse-then-expand by the same groups reads as the identity.
Relation = list[tuple[tuple[int, ...], tuple[int, ...]]]

RESHAPES = ("tensor.expand_shape", "tensor.collapse_shape")


def _reshape_relation(op: ir.Operation) -> Relation:
    groups = reassociation(op)
    if op.name == "tensor.collapse_shape":
        return [(tuple(g), (k,)) for k, g in enumerate(groups)]
    return [((k,), tuple(g)) for k, g in enumerate(groups)]


def _compose(first: Relation, second: Relation) -> Relation:
    """The relation A→C of A→B (``first``) followed by B→C (``second``)."""
    out: Relation = []
    i = j = covered_first = covered_second = 0
    a_dims: list[int] = []
    c_dims: list[int] = []
    while i < len(first) or j < len(second):
        if j >= len(second) or (i < len(first) and covered_first <= covered_second):
            a_dims += first[i][0]
            covered_first += len(first[i][1])
            i += 1
        else:
            c_dims += second[j][1]
            covered_second += len(second[j][0])
            j += 1
        if covered_first == covered_second:
            out.append((tuple(a_dims), tuple(c_dims)))
            a_dims, c_dims = [], []
    return out


def _static(dims: Sequence[int | None]) -> bool:
    return all(d is not None for d in dims)


def _proven_equal(a: Sequence[int | None], b: Sequence[int | None]) -> bool:
    return _static(a) and _static(b) and math.prod(a) == math.prod(b)  # type: ignore[arg-type]


def _refine(
    block: tuple[tuple[int, ...], tuple[int, ...]],
    source: Sequence[int | None],
    result: Sequence[int | None],
) -> Relation:
    """Splits a block where a cut provably separates equal element counts (unit dims
    dropped first): either both prefixes or both remainders are static and agree."""
    src = tuple(d for d in block[0] if source[d] != 1)
    dst = tuple(d for d in block[1] if result[d] != 1)
    out: Relation = []
    while True:
        sizes_src = [source[d] for d in src]
        sizes_dst = [result[d] for d in dst]
        cuts = sorted(
            ((i, j) for i in range(1, len(src)) for j in range(1, len(dst))),
            key=lambda c: c[0] + c[1],
        )
        cut = next(
            (
                (i, j)
                for i, j in cuts
                if _proven_equal(sizes_src[:i], sizes_dst[:j])
                or _proven_equal(sizes_src[i:], sizes_dst[j:])
            ),
            None,
        )
        if cut is None:
            if src or dst:
                out.append((src, dst))
            return out
        out.append((src[: cut[0]], dst[: cut[1]]))
        src, dst = src[cut[0] :], dst[cut[1] :]


def _normalised(relation: Relation, source: ir.Value, result: ir.Value) -> Relation:
    source_shape, result_shape = shape(source), shape(result)
    out: Relation = []
    for block in relation:
        out += _refine(block, source_shape, result_shape)
    return out


def reshape_source(
    value: ir.Value, groups: Sequence[Sequence[int]], expand: bool = False
) -> tuple[ir.Value, list[ir.Operation]] | None:
    """The nearest value up ``value``'s chain of expand/collapse_shape ops (``value`` itself
    included) of which ``value`` is the collapse by ``groups`` (or, with ``expand``, the
    expansion by ``groups``), with the reshape ops in between; None when there is none.

    Reads composed and split reshapes by what they do, so that canonicalize folding two
    collapses into one does not hide a pattern; unit dims are ignored."""
    parts: list[tuple[int, ...]] = [tuple(int(d) for d in g) for g in groups]
    if expand:
        expected: Relation = [((k,), g) for k, g in enumerate(parts)]
        source_rank, result_rank = len(parts), sum(len(g) for g in parts)
    else:
        expected = [(g, (k,)) for k, g in enumerate(parts)]
        source_rank, result_rank = sum(len(g) for g in parts), len(parts)
    if len(shape(value)) != result_rank:
        return None
    relation: Relation = [((k,), (k,)) for k in range(result_rank)]
    current, ops = value, list[ir.Operation]()
    while True:
        if len(shape(current)) == source_rank and _normalised(
            relation, current, value
        ) == _normalised(expected, current, value):
            return current, ops
        op = producer_named(current, *RESHAPES)
        if op is None:
            return None
        relation = _compose(_reshape_relation(op), relation)
        ops.append(op)
        current = op.operands[0]
