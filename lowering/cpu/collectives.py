"""``tessera.collective.*`` on the CPU: a call into the runtime through the communicator.

The communicator operand (an int64 tensor [1], bound like a weight) holds the address of the
runtime's callback (``runtime/collectives.py``, which names the arguments). The kernel core
passes it the op kind, the element type, the input buffer, a freshly allocated result buffer
and the input's extent before and from the gathered axis; the callback runs
torch.distributed's collective on tensor views of the two buffers and returns a status.

Why a call rather than splitting the program into host steps with collective steps between
them: the CPU program is one host function, and every value live across a collective (the
residual stream, positions, masks, the KV-cache programs' state) would have to become a
manifest buffer at each of the 2·layers + 2 cuts. One indirect call keeps the function whole
and costs nothing next to the collective itself. The callback comes through an argument,
not a symbol the shared object imports, so a JIT module and a linked one (``-z defs``) take
it alike.

A null communicator, or a collective that failed (the callback printed why), stops the
process through ``cf.assert``: a rank that went on would leave the others waiting in their
next collective, or compute with garbage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import AllGather, AllReduce
from tessera.ir_types import Dims, shaped_dims
from tessera.mlir_text import memref_type, quote
from tessera.runtime.shard_layout import ALL_GATHER, ALL_REDUCE, COMMUNICATOR, DTYPE_CODES

from ..kernel_call import mangle, replace_with_call
from .builder import Kernel
from .host import Host
from .registry import lowering_error, rule
from .tensors import alloc, buffer_of, dims_of, return_tensor

_COMMUNICATOR_TYPE = memref_type([1], "i64")
_CALLBACK = "!llvm.ptr, (i64, i64, !llvm.ptr, !llvm.ptr, i64, i64) -> i32"


@dataclass(frozen=True)
class CollectiveSpec:
    """One collective for the exact shape of its input: ``kind`` (``ALL_REDUCE`` or
    ``ALL_GATHER``), the axis before which ``outer`` ends (the gathered axis; the last for
    an all-reduce, where any split of the elements does) and the ranks."""

    kind: int
    shape: tuple[int | None, ...]
    dtype: str
    axis: int
    ranks: int

    def symbol(self) -> str:
        name = "all_gather" if self.kind == ALL_GATHER else "all_reduce"
        dims = "x".join("d" if d is None else str(d) for d in self.shape)
        return mangle("tessera", name, dims, self.dtype, f"a{self.axis}", f"n{self.ranks}")

    @property
    def result_shape(self) -> tuple[int | None, ...]:
        if self.kind == ALL_REDUCE:
            return self.shape
        size = self.shape[self.axis]
        grown = None if size is None else size * self.ranks
        return (*self.shape[: self.axis], grown, *self.shape[self.axis + 1 :])


def _extent(k: Kernel, buffer: str, shape: tuple[int | None, ...], dtype: str, axes: range) -> str:
    """The product of ``buffer``'s dims over ``axes`` as an i64 value."""
    static = 1
    dynamic: str | None = None
    for axis in axes:
        size = shape[axis]
        if size is not None:
            static *= size
            continue
        dim = k.op("d", f"memref.dim {buffer}, {k.index(axis)} : {memref_type(shape, dtype)}")
        dynamic = dim if dynamic is None else k.mul(dynamic, dim)
    if dynamic is None:
        total = k.index(static)
    elif static == 1:
        total = dynamic
    else:
        total = k.mul(dynamic, static)
    return k.op("n", f"arith.index_cast {total} : index to i64")


def _pointer(k: Kernel, buffer: str, shape: tuple[int | None, ...], dtype: str) -> str:
    """The address of ``buffer``'s first element (identity layout: the aligned pointer)."""
    index = k.op(
        "a",
        f"memref.extract_aligned_pointer_as_index {buffer} : {memref_type(shape, dtype)} -> index",
    )
    address = k.op("a", f"arith.index_cast {index} : index to i64")
    return k.op("p", f"llvm.inttoptr {address} : i64 to !llvm.ptr")


@cache
def core_source(spec: CollectiveSpec) -> str:
    x_type = memref_type(spec.shape, spec.dtype)
    y_type = memref_type(spec.result_shape, spec.dtype)
    k = Kernel(
        spec.symbol() + "_core",
        [("%x", x_type), ("%communicator", _COMMUNICATOR_TYPE), ("%y", y_type)],
    )
    callback = k.op("h", f"memref.load %communicator[{k.index(0)}] : {_COMMUNICATOR_TYPE}")
    zero = k.constant("0", "i64")
    present = k.op("ok", f"arith.cmpi ne, {callback}, {zero} : i64")
    k.line(
        f"cf.assert {present}, "
        + quote(
            f"tessera: a collective ran without a communicator (bind the weight '{COMMUNICATOR}' "
            "with tessera.runtime.collectives)"
        )
    )
    function = k.op("f", f"llvm.inttoptr {callback} : i64 to !llvm.ptr")
    outer = _extent(k, "%x", spec.shape, spec.dtype, range(spec.axis))
    inner = _extent(k, "%x", spec.shape, spec.dtype, range(spec.axis, len(spec.shape)))
    source = _pointer(k, "%x", spec.shape, spec.dtype)
    target = _pointer(k, "%y", spec.result_shape, spec.dtype)
    kind = k.constant(str(spec.kind), "i64")
    dtype = k.constant(str(DTYPE_CODES[spec.dtype]), "i64")
    status = k.op(
        "s",
        f"llvm.call {function}({kind}, {dtype}, {source}, {target}, {outer}, {inner}) : "
        + _CALLBACK,
    )
    done = k.op("ok", f"arith.cmpi eq, {status}, {k.i32(0)} : i32")
    k.line(f"cf.assert {done}, " + quote("tessera: a collective failed (see the error above)"))
    k.line("return")
    return k.text()


def wrapper_source(spec: CollectiveSpec, symbol: str, x: ir.Value, y: ir.Value) -> str:
    shape: Dims = list(spec.shape)
    k = Kernel(
        symbol,
        [("%x", str(x.type)), ("%communicator", "tensor<1xi64>")],
        results=[str(y.type)],
    )
    x_buffer = buffer_of(k, "%x", shape, spec.dtype, shape)
    communicator = buffer_of(k, "%communicator", [1], "i64", [1])
    sizes = dims_of(k, "%x", shape, spec.dtype)
    if spec.kind == ALL_GATHER and spec.shape[spec.axis] is None:
        sizes[spec.axis] = k.mul(sizes[spec.axis], spec.ranks)
    result: Dims = list(spec.result_shape)
    y_buffer = alloc(k, result, spec.dtype, sizes)
    k.call_out_of_line(
        f"{spec.symbol()}_core",
        [x_buffer, communicator, y_buffer],
        [memref_type(shape, spec.dtype), _COMMUNICATOR_TYPE, memref_type(result, spec.dtype)],
    )
    return return_tensor(k, y_buffer, result, spec.dtype, y.type)


def _lower(op: ir.Operation, kind: int, axis: int, ranks: int) -> None:
    x, communicator, y = op.operands[0], op.operands[1], op.results[0]
    dtype = str(ir.ShapedType(x.type).element_type)
    if dtype not in DTYPE_CODES:
        raise lowering_error(
            op, f"x has element type {dtype}; collectives take {', '.join(DTYPE_CODES)}"
        )
    spec = CollectiveSpec(kind, tuple(shaped_dims(x.type)), dtype, axis, ranks)
    if tuple(shaped_dims(y.type)) != spec.result_shape:
        raise lowering_error(
            op, f"the result {y.type} must be {list(spec.result_shape)} for the cpu collective"
        )
    symbol = mangle(spec.symbol(), "wrap")
    source = core_source(spec) + wrapper_source(spec, symbol, x, y)
    replace_with_call(op, symbol, source, [x, communicator])


@rule("tessera.collective.all_reduce")
def lower_all_reduce(op: ir.Operation, host: Host) -> None:
    view = AllReduce(op)
    _lower(op, ALL_REDUCE, len(shaped_dims(view.x.type)) - 1, view.ranks)


@rule("tessera.collective.all_gather")
def lower_all_gather(op: ir.Operation, host: Host) -> None:
    view = AllGather(op)
    _lower(op, ALL_GATHER, view.axis, view.ranks)
