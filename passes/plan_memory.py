"""tessera-plan-memory: a place for every tensor value of a function whose regions are inlined.

Intermediates live in one arena per program, so the runtime allocates once and a CUDA graph
can replay the whole program. Sizes depend on the symbols (``B``, ``S``), so offsets are
expressions: a linear scan in program order gives each value a 256-byte-aligned slice, and a
slice freed after its value's last use is reused only when it is provably large enough for
every symbol value >= 1 (``Poly.covers``); otherwise the value takes fresh space at the end.
Elementwise ops whose input dies at them write over it (``inplace``), reshapes alias their
source (``view``), returned values go to the output buffers and constants are uploaded.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from mlir import ir

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

from .shape_exprs import Poly, located, numel, shape_polys

ALIGNMENT = 256
BUFFERS_ATTR = "tessera.buffers"
ARENA_ATTR = "tessera.arena_bytes"
OUTPUT_ATTR = "tessera.output"
VIEWS = ("tensor.expand_shape", "tensor.collapse_shape", "tensor.cast")
SHAPE_QUERIES = ("tensor.dim", "memref.dim")
# Kernels that read each element of this operand before writing the same element of the result.
INPLACE_OPERANDS = {"tessera.norm.rms": (0,), "tessera.rope.apply": (0,)}
_NOT_COMPUTED = {
    "argument": "a function argument",
    "constant": "a constant",
    "empty": "a tensor.empty",
}
# Greedy placement has no best order, so the plan is made with each of these (best fit or
# first fit, growing a free last slice or not) and the smallest arena kept, judged (like the
# best fit) with every symbol at 512.
_STRATEGIES = ((True, False), (True, True), (False, False), (False, True))
_REFERENCE: Mapping[str, int] = collections.defaultdict(lambda: 512)


@dataclass(frozen=True)
class PlannedValue:
    """Where one tensor value lives. ``first``/``last`` are the positions (in the function
    body) of the op defining it and of its last use, through views of it."""

    label: str  # the value as the IR prints it, e.g. "%12"
    op: str  # the defining op's name; it is the op at position ``first``
    result: int  # which of its results
    kind: str  # arena / inplace / view / output / constant
    dtype: str
    shape: tuple[str, ...]
    bytes: str
    first: int
    last: int
    offset: str | None = None  # arena and inplace: where it starts in the arena
    of: int | None = None  # view and inplace: the operand whose bytes it takes
    name: str | None = None  # output: the output buffer's name

    def attribute(self) -> ir.DictAttr:
        """The ``tessera.buffers`` entry of this value."""
        fields: dict[str, ir.Attribute] = {"kind": ir.StringAttr.get(self.kind)}
        if self.kind == "arena":
            fields["offset"] = ir.StringAttr.get(str(self.offset))
            fields["bytes"] = ir.StringAttr.get(self.bytes)
        if self.of is not None:
            fields["of"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), self.of)
        if self.name is not None:
            fields["name"] = ir.StringAttr.get(self.name)
        return ir.DictAttr.get(fields)

    @property
    def index(self) -> int:
        """The position of the defining op in the function body (``first``)."""
        return self.first

    @property
    def in_arena(self) -> bool:
        return self.kind in ("arena", "inplace")


@dataclass(frozen=True)
class MemoryPlan:
    """The arena's size and every tensor value's place, in program order."""

    arena_bytes: str
    values: tuple[PlannedValue, ...]

    def arena_size(self, env: Mapping[str, int]) -> int:
        return Poly.parse(self.arena_bytes).evaluate(env)

    def live_bytes(self, index: int, env: Mapping[str, int]) -> int:
        """Arena bytes in use while the op at ``index`` runs (a value written in place over
        its dying input counts once)."""
        return self._live(env).get(index, 0)

    def peak_bytes(self, env: Mapping[str, int]) -> int:
        """The most arena bytes live at once: what any plan needs at least."""
        return max(self._live(env).values(), default=0)

    def _live(self, env: Mapping[str, int]) -> dict[int, int]:
        slices: dict[int, dict[str, int]] = collections.defaultdict(dict)
        for value in self.values:
            if not value.in_arena:
                continue
            size = Poly.parse(value.bytes).evaluate(env)
            for index in range(value.first, value.last + 1):
                at = slices[index]
                at[str(value.offset)] = max(at.get(str(value.offset), 0), size)
        return {index: sum(at.values()) for index, at in slices.items()}

    def describe(self, env: Mapping[str, int]) -> str:
        """A table of the values with sizes and offsets evaluated at ``env``."""
        rows = [("value", "op", "kind", "shape", "bytes", "offset", "live")]
        for v in self.values:
            where = "" if v.offset is None else str(Poly.parse(v.offset).evaluate(env))
            place = {"view": f"view of #{v.of}", "inplace": f"in place of #{v.of}"}.get(v.kind)
            rows.append(
                (
                    v.label,
                    v.op,
                    place or (f"output {v.name}" if v.kind == "output" else v.kind),
                    f"{v.dtype}[{', '.join(v.shape)}]",
                    str(Poly.parse(v.bytes).evaluate(env)),
                    where,
                    f"{v.first}-{v.last}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        bound = ", ".join(f"{k}={v}" for k, v in sorted(env.items()))
        lines.append(
            f"arena {self.arena_size(env)} bytes ({self.arena_bytes}), peak live "
            f"{self.peak_bytes(env)} bytes, at {bound or 'static sizes'}"
        )
        return "\n".join(lines)


@dataclass(eq=False)
class _Slice:
    """``extent`` bytes of the arena at ``offset`` (both multiples of 256)."""

    offset: Poly
    extent: Poly
    free: bool = False
    end: int = -1  # position of the last use of the values in it


def aligned(size: Poly) -> Poly:
    return size if size.divisible_by(ALIGNMENT) else size.cdiv(ALIGNMENT) * ALIGNMENT


class _Arena:
    """Slices in offset order; the free ones are reused, split and merged."""

    def __init__(self, best_fit: bool, grow_last: bool) -> None:
        self.best_fit, self.grow_last = best_fit, grow_last
        self.slices: list[_Slice] = []
        self.end = Poly.const(0)

    def take(self, size: Poly) -> _Slice:
        """A free slice that holds ``size`` for all symbols (the tightest, or the first), its
        tail left free; else fresh space at the end."""
        fits = [s for s in self.slices if s.free and s.extent.covers(size)]
        if not fits:
            last = self.slices[-1] if self.slices else None
            if self.grow_last and last and last.free and aligned(size).covers(last.extent):
                # A free slice at the end that is too small grows into the fresh space.
                last.free, last.extent = False, aligned(size)
                self.end = last.offset + last.extent
                return last
            fresh = _Slice(self.end, aligned(size))
            self.end = self.end + fresh.extent
            self.slices.append(fresh)
            return fresh
        best = min(fits, key=lambda s: s.extent.evaluate(_REFERENCE)) if self.best_fit else fits[0]
        best.free = False
        used = aligned(size)
        if best.extent != used:
            # An extent >= size that is a multiple of 256 is >= aligned(size): the tail is >= 0.
            tail = _Slice(best.offset + used, best.extent - used, free=True)
            best.extent = used
            self.slices.insert(self.slices.index(best) + 1, tail)
        return best

    def release(self, done: _Slice) -> None:
        """Frees ``done``, merged with free neighbours so that a larger value fits there."""
        done.free = True
        at = self.slices.index(done)
        if at + 1 < len(self.slices) and self.slices[at + 1].free:
            self._merge(at)
        if at > 0 and self.slices[at - 1].free:
            self._merge(at - 1)

    def _merge(self, at: int) -> None:
        a, b = self.slices[at], self.slices.pop(at + 1)
        a.extent = a.extent + b.extent


def _element_bytes(type_: ir.Type) -> int:
    width = ir.IntegerType(type_).width if isinstance(type_, ir.IntegerType) else None
    if width is None:
        width = 64 if isinstance(type_, ir.IndexType) else ir.FloatType(type_).width
    return -(-width // 8)  # i1 is stored as a byte


def _element(value: ir.Value) -> ir.Type:
    return ir.RankedTensorType(value.type).element_type


def _inplace_candidates(op: ir.Operation) -> tuple[int, ...]:
    """Operands the op may overwrite with its result (element i read before i is written)."""
    operands = list(op.operands)
    if op.name in INPLACE_OPERANDS:
        return INPLACE_OPERANDS[op.name]
    if op.name.startswith(("arith.", "math.")) and op.name != "arith.constant":
        return tuple(i for i, v in enumerate(operands) if isinstance(v.type, ir.RankedTensorType))
    if op.name == "linalg.generic":
        maps = [ir.AffineMapAttr(a).value for a in ir.ArrayAttr(op.attributes["indexing_maps"])]
        kinds = [str(a) for a in ir.ArrayAttr(op.attributes["iterator_types"])]
        if all(m == ir.AffineMap.get_identity(m.n_dims) for m in maps) and all(
            "parallel" in k for k in kinds
        ):
            return tuple(range(len(operands)))
    return ()


def _output_names(func_op: ir.Operation, count: int) -> list[str]:
    names = ["logits"] if count == 1 else [f"out{i}" for i in range(count)]
    if "res_attrs" in func_op.attributes:
        for i, attrs in enumerate(ir.ArrayAttr(func_op.attributes["res_attrs"])):
            table = ir.DictAttr(attrs)
            if OUTPUT_ATTR in table:
                names[i] = str(ir.StringAttr(table[OUTPUT_ATTR]).value)
    return names


def memory_plan(func_op: ir.Operation) -> MemoryPlan:
    """Plans ``func_op``'s memory (see the module's docstring); changes nothing."""
    with func_op.context:
        return _Planner(func_op).plan()


class _Planner:
    def __init__(self, func_op: ir.Operation) -> None:
        if len(func_op.regions[0].blocks) != 1:
            raise located("tessera-plan-memory needs a function body of one block", func_op)
        self.func_op = func_op
        self.ops = [v.operation for v in func_op.regions[0].blocks[0].operations]
        for op in self.ops:
            if op.name == "tessera.region":
                raise located("tessera-plan-memory needs the regions inlined first", op)
        self.state = ir.AsmState(func_op)
        self.shapes = shape_polys(func_op)
        self.kind: dict[ir.Value, str] = {}
        self.root: dict[ir.Value, ir.Value] = {}
        self.first: dict[ir.Value, int] = {}
        self.last: dict[ir.Value, int] = {}
        self.outputs: dict[ir.Value, str] = {}
        for arg in func_op.regions[0].blocks[0].arguments:
            self.kind[arg] = "argument"
        for index, op in enumerate(self.ops):
            for nested in walk_ops(op):
                if nested.name in SHAPE_QUERIES:
                    continue  # reads the shape, which the symbols give, not the bytes
                for value in nested.operands:
                    self.last[value] = index
            for result in op.results:
                if isinstance(result.type, ir.RankedTensorType):
                    self.first[result] = index
                    self.kind[result] = self.classify(op, result)
        self.mark_outputs()
        for value, root in self.root.items():  # views keep their source alive
            self.last[root] = max(self.last_use(root), self.last_use(value))

    def name(self, value: ir.Value) -> str:
        return value.get_name(self.state)

    def last_use(self, value: ir.Value) -> int:
        return self.last.get(value, self.first.get(value, -1))

    def bytes(self, value: ir.Value) -> Poly:
        return numel(self.shapes[value]) * _element_bytes(_element(value))

    def classify(self, op: ir.Operation, result: ir.Value) -> str:
        if op.name == "tensor.empty":
            return "empty"
        if op.name == "arith.constant":
            return "constant"
        if op.name in VIEWS and ir.RankedTensorType(op.operands[0].type).encoding is None:
            source = op.operands[0]
            self.root[result] = self.root.get(source, source)
            return "empty" if self.kind[self.root[result]] == "empty" else "view"
        for number, value in enumerate(op.operands):
            linalg_out = op.name.startswith("linalg.") and number >= len(op.operands) - len(
                op.results
            )
            if self.kind.get(value) == "empty" and not linalg_out and op.name not in VIEWS:
                raise located(
                    f"'{op.name}' reads {self.name(value)}, a tensor.empty, whose contents are "
                    "undefined; only linalg outs and shape queries may use it",
                    op,
                )
        return "arena"

    def mark_outputs(self) -> None:
        """Returned values (or the sources of returned views) are written to the outputs."""
        ret = self.ops[-1]
        names = _output_names(self.func_op, len(ret.operands))
        for value, name in zip(ret.operands, names, strict=True):
            root = self.root.get(value, value)
            problem = None
            if root in self.outputs:
                problem = f"output '{self.outputs[root]}' already holds its bytes"
            elif self.kind.get(root) != "arena":
                what = _NOT_COMPUTED.get(self.kind.get(root, ""), "not a tensor")
                problem = f"{'a view of ' if root != value else ''}{what}"
            if problem is not None:
                raise located(
                    f"output '{name}' is {self.name(value)}, {problem}; outputs must be tensors "
                    "the function computes, each returned once",
                    ret,
                )
            self.outputs[root] = name

    def inplace_operand(
        self, op: ir.Operation, result: ir.Value, slots: dict[ir.Value, _Slice]
    ) -> int | None:
        """The operand whose slice ``result`` may take: it dies here, lives in the arena, and
        has the same element type and size; no other operand reads the same bytes and no
        other result of the op took them."""
        operands = list(op.operands)
        index = self.first[result]
        for number in _inplace_candidates(op):
            value = operands[number]
            root = self.root.get(value, value)
            slot = slots.get(root)
            if (
                slot is None
                or slot.end != index
                or self.last_use(root) != index
                or _element(value) != _element(result)
                or numel(self.shapes[value]) != numel(self.shapes[result])
            ):
                continue
            others = [v for v in operands if slots.get(self.root.get(v, v)) is slot]
            taken = any(slots.get(r) is slot for r in op.results)  # by an earlier result
            if all(v == value for v in others) and not taken:
                return number
        return None

    def plan(self) -> MemoryPlan:
        plans = [self.allocate(_Arena(*strategy)) for strategy in _STRATEGIES]
        return min(plans, key=lambda plan: plan.arena_size(_REFERENCE))

    def allocate(self, arena: _Arena) -> MemoryPlan:
        """The linear scan: results get slices (or their dying operand's), then the slices
        whose values are all dead after this op are freed."""
        slots: dict[ir.Value, _Slice] = {}
        inplace: dict[ir.Value, int] = {}
        taken: list[_Slice] = []
        for index, op in enumerate(self.ops):
            for result in op.results:
                if self.kind.get(result) != "arena" or result in self.outputs:
                    continue
                number = self.inplace_operand(op, result, slots)
                if number is not None:
                    source = op.operands[number]
                    slot = slots[self.root.get(source, source)]
                    inplace[result] = number
                else:
                    slot = arena.take(self.bytes(result))
                    taken.append(slot)
                slots[result] = slot
                slot.end = max(slot.end, self.last_use(result))
            for slot in [s for s in taken if s.end <= index]:
                arena.release(slot)
            taken = [s for s in taken if s.end > index]
        values = [self.planned(v, slots, inplace) for v in self.first if self.kind[v] != "empty"]
        return MemoryPlan(str(arena.end), tuple(values))

    def planned(
        self, value: ir.Value, slots: dict[ir.Value, _Slice], inplace: dict[ir.Value, int]
    ) -> PlannedValue:
        assert isinstance(value, ir.OpResult)
        kind = self.kind[value]
        if value in self.outputs:
            kind = "output"
        elif value in inplace:
            kind = "inplace"
        slot = slots.get(value)
        return PlannedValue(
            label=self.name(value),
            op=value.owner.name,
            result=value.result_number,
            kind=kind,
            dtype=str(_element(value)),
            shape=tuple(str(d) for d in self.shapes[value]),
            bytes=str(self.bytes(value)),
            first=self.first[value],
            last=self.last_use(value),
            offset=None if slot is None else str(slot.offset),
            of=inplace.get(value, 0 if kind == "view" else None),
            name=self.outputs.get(value),
        )


def annotate(func_op: ir.Operation, plan: MemoryPlan) -> None:
    """Writes ``plan`` onto the IR: ``tessera.buffers`` on each op defining tensors,
    ``tessera.arena_bytes`` on the function."""
    with func_op.context:
        _annotate(func_op, plan)


def _annotate(func_op: ir.Operation, plan: MemoryPlan) -> None:
    ops = [v.operation for v in func_op.regions[0].blocks[0].operations]
    by_op: dict[int, dict[int, PlannedValue]] = collections.defaultdict(dict)
    for value in plan.values:
        by_op[value.first][value.result] = value
    for index, entries in by_op.items():
        op = ops[index]
        empty = ir.DictAttr.get({})
        attrs = [entries[i].attribute() if i in entries else empty for i in range(len(op.results))]
        op.attributes[BUFFERS_ATTR] = ir.ArrayAttr.get(attrs)
    func_op.attributes[ARENA_ATTR] = ir.StringAttr.get(plan.arena_bytes)


@register_pass("tessera-plan-memory")
def plan_memory(module: ir.Operation, options: NoOptions) -> None:
    """Give every tensor value of each function a place (run after the regions are inlined):
    tessera.buffers on the op defining it (an arena slice with offset and bytes as expressions
    over the symbols, in place over a dying operand, a view of its source, an output buffer, or
    a constant) and tessera.arena_bytes on the function. Slices are 256-byte aligned and reused
    after their value's last use when provably large enough for all symbol values."""
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and op.regions[0].blocks:
            annotate(op, memory_plan(op))
