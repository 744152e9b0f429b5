"""The element of a tensor SSA value at an index, computed from the value's producers.

Mask classification and rope tables read tensors this way: a few elements at chosen indices
tell what a mask or a table is, without materialising it or depending on how a front end
built it (``scalar_eval`` does the arithmetic of each element).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mlir import ir
from mlir.dialects import linalg

from tessera.ir_types import shaped_dims

from .constant_values import dense_elements, splat_element
from .match import i64_array_attr, producer, reassociation
from .scalar_eval import Evaluator, NotEvaluable, is_elementwise

Index = tuple[int, ...]
ElementFn = Callable[[Index], float | int | bool]

_DYNAMIC = -(2**63)  # ShapedType::kDynamic in static_offsets/sizes/strides


class OutOfBounds(Exception):
    """An index lies outside a static dim of a tensor on the way to the value's sources."""


def _dims(value: ir.Value) -> list[int | None]:
    if not isinstance(value.type, ir.RankedTensorType):
        raise NotEvaluable(f"{value.type} is not a ranked tensor")
    return shaped_dims(value)


class ElementEvaluator:
    """The element of a tensor SSA value at an index, computed from the value's producers.

    Looks through splats and dense constants, broadcasts, reshapes, transposes, static
    slices, concatenation, elementwise arith/math ops on tensors and all-parallel
    ``linalg.generic`` ops (whose bodies may read ``linalg.index``). ``leaves`` gives the
    elements of chosen values by a function of the index (e.g. a positions tensor, so that
    the iota behind it is not read). Raises ``NotEvaluable`` for anything else and
    ``OutOfBounds`` for an index outside a static dim of a tensor on the way."""

    def __init__(self, leaves: dict[ir.Value, ElementFn] | None = None) -> None:
        self.leaves = dict(leaves or {})
        self._memo: dict[tuple[ir.Value, Index], float | int | bool] = {}
        self._constants: dict[ir.Value, list[float | int]] = {}

    def at(self, value: ir.Value, index: Sequence[int]) -> float | int | bool:
        point = tuple(int(i) for i in index)
        dims = _dims(value)
        if len(point) != len(dims):
            raise NotEvaluable(f"index {point} for a rank-{len(dims)} tensor")
        for i, size in zip(point, dims, strict=True):
            if i < 0 or (size is not None and i >= size):
                raise OutOfBounds(f"index {point} outside {value.type}")
        key = (value, point)
        if key not in self._memo:
            if value in self.leaves:
                self._memo[key] = self.leaves[value](point)
            else:
                op = producer(value)
                if op is None:
                    raise NotEvaluable("a block argument has no elements to read")
                self._memo[key] = self._element(op, value, point)
        return self._memo[key]

    def _element(self, op: ir.Operation, value: ir.Value, index: Index) -> float | int | bool:
        name = op.name
        if name == "arith.constant":
            return self._constant(op, value, index)
        if not len(op.operands):
            raise NotEvaluable(f"cannot read the elements of '{name}'")
        source = op.operands[0]
        if name == "linalg.fill":
            return Evaluator()(op.operands[0])
        if name == "tensor.cast":
            return self.at(source, index)
        if name == "linalg.broadcast":
            added = set(i64_array_attr(op, "dimensions") or [])
            return self.at(source, [i for k, i in enumerate(index) if k not in added])
        if name == "linalg.transpose":
            permutation = i64_array_attr(op, "permutation") or []
            point = [0] * len(index)
            for k, axis in enumerate(permutation):
                point[axis] = index[k]
            return self.at(source, point)
        if name == "tensor.collapse_shape":
            return self.at(source, _split(index, reassociation(op), _dims(source)))
        if name == "tensor.expand_shape":
            return self.at(source, _join(index, reassociation(op), _dims(value)))
        if name == "tensor.extract_slice":
            return self.at(source, _slice_source(op, index))
        if name == "tensor.concat":
            return self._concat(op, index)
        if name == "linalg.generic":
            return self._generic(op, value, index)
        if is_elementwise(name) and all(
            isinstance(v.type, ir.RankedTensorType) for v in op.operands
        ):
            env = {v: self.at(v, index) for v in op.operands}
            return Evaluator(env)(value)
        raise NotEvaluable(f"cannot read the elements of '{name}'")

    def _constant(self, op: ir.Operation, value: ir.Value, index: Index) -> float | int:
        attr = op.attributes["value"]
        if not isinstance(attr, ir.DenseElementsAttr):
            raise NotEvaluable(f"constant {attr} is not a dense tensor")
        offset = 0
        for i, size in zip(index, _dims(value), strict=True):
            if size is None:
                raise NotEvaluable(f"constant {attr} has a dynamic dim")
            offset = offset * size + i
        if attr.is_splat:
            return splat_element(attr)
        element = ir.ShapedType(attr.type).element_type
        if not isinstance(
            element, ir.IntegerType | ir.F64Type | ir.F32Type | ir.BF16Type | ir.F16Type
        ):
            # The bindings decode no other element type (f8, f4, ...): nothing to match on.
            raise NotEvaluable(f"cannot read the elements of a {element} constant")
        reduced_float = isinstance(element, ir.BF16Type | ir.F16Type)
        if not reduced_float and isinstance(attr, ir.DenseIntElementsAttr | ir.DenseFPElementsAttr):
            # Read one element: a large constant (a static mask) is never decoded whole.
            return attr[offset]
        if value not in self._constants:
            self._constants[value] = dense_elements(attr)
        return self._constants[value][offset]

    def _concat(self, op: ir.Operation, index: Index) -> float | int | bool:
        axis = ir.IntegerAttr(op.attributes["dim"]).value
        position = index[axis]
        inputs = list(op.operands)
        for k, piece in enumerate(inputs):
            size = _dims(piece)[axis]
            if size is None and k != len(inputs) - 1:
                raise NotEvaluable("tensor.concat of a dynamic piece before the last")
            if size is None or position < size:
                return self.at(piece, (*index[:axis], position, *index[axis + 1 :]))
            position -= size
        raise OutOfBounds(f"index {index} past the end of tensor.concat")

    def _generic(self, op: ir.Operation, value: ir.Value, index: Index) -> float | int | bool:
        if any(
            "parallel" not in str(kind) for kind in ir.ArrayAttr(op.attributes["iterator_types"])
        ):
            raise NotEvaluable("linalg.generic with a reduction")
        generic = op.opview
        assert isinstance(generic, linalg.GenericOp), "linalg's op classes are registered"
        inputs, outputs = list(generic.inputs), list(generic.outputs)
        maps = [ir.AffineMapAttr(m).value for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
        assert isinstance(value, ir.OpResult), "the value has a producer"
        number = value.result_number
        out_map = maps[len(inputs) + number]
        loops: list[int | None] = [None] * out_map.n_dims
        for k, expr in enumerate(out_map.results):
            if not isinstance(expr, ir.AffineDimExpr):
                raise NotEvaluable("linalg.generic result map is not a permutation")
            loops[expr.position] = index[k]
        point = tuple(i for i in loops if i is not None)
        if len(point) != len(loops):
            raise NotEvaluable("linalg.generic result map is not a permutation")
        body = op.regions[0].blocks[0]
        env: dict[ir.Value, float | int | bool] = {}
        for k, operand in enumerate([*inputs, *outputs]):
            argument = body.arguments[k]
            if list(argument.uses):
                env[argument] = self.at(operand, _apply_map(maps[k], point))
        terminator = [o.operation for o in body.operations][-1]
        return Evaluator(env, indices=point)(terminator.operands[number])


def _split(index: Index, groups: list[list[int]], source: list[int | None]) -> list[int]:
    """Source index of a collapse_shape result index. Unit dims take 0; of the others, all
    but the outermost of each group must be static."""
    point = [0] * len(source)
    for k, group in enumerate(groups):
        rest = index[k]
        dims = [d for d in group if source[d] != 1]
        for d in reversed(dims[1:]):
            size = source[d]
            if size is None:
                raise NotEvaluable("collapse_shape with a dynamic inner dim")
            point[d], rest = rest % size, rest // size
        if dims:
            point[dims[0]] = rest
    return point


def _join(index: Index, groups: list[list[int]], result: list[int | None]) -> list[int]:
    """Source index of an expand_shape result index. Unit dims are skipped; of the others,
    all but the outermost of each group must be static."""
    point = []
    for group in groups:
        dims = [d for d in group if result[d] != 1]
        flat = index[dims[0]] if dims else 0
        for d in dims[1:]:
            size = result[d]
            if size is None:
                raise NotEvaluable("expand_shape with a dynamic inner dim")
            flat = flat * size + index[d]
        point.append(flat)
    return point


def _slice_source(op: ir.Operation, index: Index) -> list[int]:
    offsets = i64_array_attr(op, "static_offsets") or []
    strides = i64_array_attr(op, "static_strides") or []
    if len(offsets) != len(index) or _DYNAMIC in offsets or _DYNAMIC in strides:
        raise NotEvaluable("tensor.extract_slice with dynamic offsets or a rank change")
    return [o + i * s for o, i, s in zip(offsets, index, strides, strict=True)]


def _apply_map(map_: ir.AffineMap, loops: Index) -> list[int]:
    point = []
    for expr in map_.results:
        if isinstance(expr, ir.AffineDimExpr):
            point.append(loops[expr.position])
        elif isinstance(expr, ir.AffineConstantExpr):
            point.append(int(expr.value))
        else:
            raise NotEvaluable(f"indexing map result {expr} is not a dim or a constant")
    return point
