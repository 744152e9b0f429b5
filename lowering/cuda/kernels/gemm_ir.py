"""Small IR-building helpers the GEMM generators share: folded index arithmetic, dtypes,
dynamic shared memory views and the warp shuffles of reductions.

Everything builds at the current insertion point and location (``with ir.InsertionPoint``,
``with loc``). Index values are 64-bit after lowering: an output of M x N elements may pass
2^31 (8192 rows of a 256,000-wide vocabulary), so offsets are never narrowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, llvm, memref, scf

from ..kernel import WORKGROUP

DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4}


def element(dtype: str) -> ir.Type:
    """The MLIR element type of ``dtype`` (``bf16``, ``f16``, ``f32``)."""
    return ir.Type.parse(dtype)


def f32() -> ir.Type:
    return ir.F32Type.get()


def index() -> ir.Type:
    return ir.IndexType.get()


# The bindings' stubs describe the generated builders, not the Python extensions that
# wrap them (which take positional values, build regions, and so on); these wrappers are
# the one place that says so to the type checker.


def constant(type_: ir.Type, value: int | float | ir.Attribute) -> ir.Value:
    """An ``arith.constant`` of ``type_``."""
    return arith.constant(type_, value)  # type: ignore[call-arg]


def if_op(condition: ir.Value, has_else: bool = False) -> scf.IfOp:
    """An ``scf.if`` without results (with an else block when ``has_else``)."""
    if has_else:
        return scf.IfOp(condition, [], has_else=True)  # type: ignore[call-arg]
    return scf.IfOp(condition)  # type: ignore[call-arg]


def for_op(lb: ir.Value, ub: ir.Value, step: ir.Value, carried: list[ir.Value]) -> scf.ForOp:
    """An ``scf.for`` carrying ``carried``."""
    return scf.ForOp(lb, ub, step, carried)  # type: ignore[call-arg]


def f32x4_struct() -> ir.Type:
    """``!llvm.struct<(f32, f32, f32, f32)>``, the result of an f32 mma.sync."""
    return llvm.StructType.get_literal([f32()] * 4)  # type: ignore[attr-defined]


def _constant_of(value: ir.Value) -> int | None:
    owner = value.owner
    if not isinstance(owner, (ir.OpView, ir.Operation)) or owner.operation.name != "arith.constant":
        return None
    attr = owner.operation.attributes["value"]
    if isinstance(attr, ir.IntegerAttr) and isinstance(value.type, ir.IndexType):
        return ir.IntegerAttr(attr).value
    return None


class Ix:
    """Index arithmetic with constant folding; constants are made once per kernel, at the
    insertion point ``constants`` (the top of the entry block)."""

    def __init__(self, constants: ir.InsertionPoint) -> None:
        self._at = constants
        self._cache: dict[int, ir.Value] = {}

    @staticmethod
    def at_top() -> Ix:
        """An ``Ix`` whose constants go where the current insertion point is now (call it
        first thing in a kernel's entry block, so the constants dominate everything)."""
        zero = constant(index(), 0)
        ix = Ix(ir.InsertionPoint(zero.owner))
        ix._cache[0] = zero
        return ix

    def c(self, value: int) -> ir.Value:
        if value not in self._cache:
            with self._at:
                self._cache[value] = constant(index(), value)
        return self._cache[value]

    def _v(self, value: ir.Value | int) -> ir.Value:
        return self.c(value) if isinstance(value, int) else value

    def _fold(self, a: ir.Value | int, b: ir.Value | int) -> tuple[int | None, int | None]:
        x = a if isinstance(a, int) else _constant_of(a)
        y = b if isinstance(b, int) else _constant_of(b)
        return x, y

    def add(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(x + y)
        if y == 0:
            return self._v(a)
        if x == 0:
            return self._v(b)
        return arith.addi(self._v(a), self._v(b))

    def sub(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(x - y)
        return self._v(a) if y == 0 else arith.subi(self._v(a), self._v(b))

    def mul(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(x * y)
        if x == 0 or y == 0:
            return self.c(0)
        if y == 1:
            return self._v(a)
        if x == 1:
            return self._v(b)
        return arith.muli(self._v(a), self._v(b))

    def div(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        """Unsigned division (every index here is non-negative)."""
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(x // y)
        return self._v(a) if y == 1 else arith.divui(self._v(a), self._v(b))

    def rem(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(x % y)
        return self.c(0) if y == 1 else arith.remui(self._v(a), self._v(b))

    def xor(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(x ^ y)
        if y == 0:
            return self._v(a)
        if x == 0:
            return self._v(b)
        return arith.xori(self._v(a), self._v(b))

    def min(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        x, y = self._fold(a, b)
        if x is not None and y is not None:
            return self.c(min(x, y))
        return arith.minui(self._v(a), self._v(b))

    def lt(self, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        """a < b (signed, so that a difference below zero compares as such)."""
        return arith.cmpi(arith.CmpIPredicate.slt, self._v(a), self._v(b))

    def select(self, cond: ir.Value, a: ir.Value | int, b: ir.Value | int) -> ir.Value:
        return arith.select(cond, self._v(a), self._v(b))


def all_of(conditions: Sequence[ir.Value]) -> ir.Value | None:
    """The conjunction of i1 values (None for none)."""
    result = None
    for cond in conditions:
        result = cond if result is None else arith.andi(result, cond)
    return result


def f32_const(value: float) -> ir.Value:
    return constant(f32(), value)


@dataclass(frozen=True)
class SharedBuffer:
    """A buffer in dynamic shared memory: a name, a static shape and an element dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def bytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * DTYPE_BYTES[self.dtype]


def shared_views(
    ix: Ix, buffers: Sequence[SharedBuffer], align: int = 128
) -> tuple[dict[str, ir.Value], int]:
    """Views of ``buffers`` laid out one after another in the dynamic shared memory (each
    ``align``-byte aligned); returns them by name and the bytes they need."""
    space = ir.Attribute.parse(WORKGROUP)
    i8 = ir.IntegerType.get_signless(8)
    base = gpu.dynamic_shared_memory(
        ir.MemRefType.get([ir.ShapedType.get_dynamic_size()], i8, memory_space=space)
    )
    views: dict[str, ir.Value] = {}
    offset = 0
    for buffer in buffers:
        type_ = ir.MemRefType.get(list(buffer.shape), element(buffer.dtype), memory_space=space)
        views[buffer.name] = memref.view(type_, base, ix.c(offset), [])
        offset += -(-buffer.bytes // align) * align
    return views, offset


def warp_sum(value: ir.Value, lanes: Sequence[int]) -> ir.Value:
    """``value`` summed over the lanes that differ in the given xor offsets (a butterfly:
    every lane ends with the sum)."""
    i32 = ir.IntegerType.get_signless(32)
    width = constant(i32, 32)
    for offset in lanes:
        shuffled = gpu.shuffle(value, constant(i32, offset), width, gpu.ShuffleMode.XOR)[0]
        value = arith.addf(value, shuffled)
    return value
