"""Rules: vector (and vector/memref loads and stores)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from .access import load, store
from .arith_ops import _elementwise
from .driver import rule
from .kinds import BITS, from_bits, kind_of, round_to, shape_of, to_bits

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op, _Run


def _enum_word(attr: ir.Attribute) -> str:
    """The case of an enum attribute: ``#nvvm<shfl_kind bfly>`` → ``bfly``."""
    return re.split(r"[<\s]", str(attr).rstrip(">"))[-1]


def _lead(values: Sequence[np.ndarray]) -> int:
    return max(v.shape[0] for v in values)


@rule("vector.extract")
def _vector_extract(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    position = list(ir.DenseI64ArrayAttr(op.attributes["static_position"]))
    if any(p < 0 for p in position):
        raise NotImplementedError(f"{k.name}: vector.extract at a dynamic position")
    at: tuple[Any, ...] = (slice(None), *position)
    return _elementwise(k, op, lambda v: v[at])


@rule("vector.insert")
def _vector_insert(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    position = list(ir.DenseI64ArrayAttr(op.attributes["static_position"]))
    at: tuple[Any, ...] = (slice(None), *position)

    def insert(value: np.ndarray, dest: np.ndarray) -> np.ndarray:
        lead = _lead([value, dest])
        out = np.array(np.broadcast_to(dest, (lead, *dest.shape[1:])))
        out[at] = value
        return out

    return _elementwise(k, op, insert)


@rule("vector.from_elements")
def _from_elements(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    shape = shape_of(op.results[0].type)

    def build(*values: np.ndarray) -> np.ndarray:
        lead = _lead(values)
        stacked = np.stack([np.broadcast_to(v, (lead,)) for v in values], axis=1)
        return stacked.reshape(lead, *shape)

    return _elementwise(k, op, build)


@rule("vector.broadcast", "vector.splat")
def _broadcast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    shape = shape_of(op.results[0].type)

    def broadcast(value: np.ndarray) -> np.ndarray:
        inner = value.shape[1:]
        source = value.reshape(value.shape[0], *([1] * (len(shape) - len(inner))), *inner)
        return np.broadcast_to(source, (value.shape[0], *shape))

    return _elementwise(k, op, broadcast)


@rule("vector.shape_cast")
def _shape_cast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    shape = shape_of(op.results[0].type)
    return _elementwise(k, op, lambda v: v.reshape(v.shape[0], *shape))


@rule("vector.bitcast")
def _vector_bitcast(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    source, target = kind_of(op.operands[0].type), kind_of(op.results[0].type)
    shape = shape_of(op.results[0].type)

    def bitcast(value: np.ndarray) -> np.ndarray:
        bits = to_bits(source, value)
        return from_bits(target, bits.reshape(*bits.shape[:-1], -1).view(BITS[target.size]))

    def reshaped(value: np.ndarray) -> np.ndarray:
        return bitcast(value).reshape(value.shape[0], *shape)

    return _elementwise(k, op, reshaped)


REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "maxnumf": lambda v: np.fmax.reduce(v, axis=1),
    "minnumf": lambda v: np.fmin.reduce(v, axis=1),
    "maximumf": lambda v: np.max(v, axis=1),
    "minimumf": lambda v: np.min(v, axis=1),
    "maxsi": lambda v: np.max(v, axis=1),
    "minsi": lambda v: np.min(v, axis=1),
    "and": lambda v: np.bitwise_and.reduce(v, axis=1),
    "or": lambda v: np.bitwise_or.reduce(v, axis=1),
    "xor": lambda v: np.bitwise_xor.reduce(v, axis=1),
}


@rule("vector.reduction")
def _reduction(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """add/mul in order, lane by lane (LLVM's ordered reduction without reassoc flags)."""
    combining = _enum_word(op.attributes["kind"])
    kind = kind_of(op.results[0].type)
    if combining in ("add", "mul"):
        ufunc = np.add if combining == "add" else np.multiply

        def ordered(v: np.ndarray, *acc: np.ndarray) -> np.ndarray:
            total = acc[0] if acc else v[:, 0]
            for lane in range(0 if acc else 1, v.shape[1]):
                total = round_to(kind, ufunc(total, v[:, lane]))
            return total

        return _elementwise(k, op, ordered)
    fn = REDUCTIONS[combining]
    return _elementwise(k, op, lambda v, *acc: fn(v) if not acc else fn(np.c_[v, acc[0]]))


@rule("vector.load", "memref.load")
def _load(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    ref, *idx = k.ins(op)
    out = k.slot(op.results[0])
    vector = op.name == "vector.load"
    shape = shape_of(op.results[0].type)
    width = int(np.prod(shape)) if vector else 1
    align = ir.IntegerAttr(op.attributes["alignment"]).value if "alignment" in op.attributes else 0

    def load_step(run: _Run) -> None:
        r = run.regs
        values = load(run, info, r[ref], [r[i] for i in idx], width, align)
        r[out] = values.reshape(len(values), *shape) if vector else values[:, 0]

    return load_step


@rule("vector.store", "memref.store")
def _store(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    value, ref, *idx = k.ins(op)
    align = ir.IntegerAttr(op.attributes["alignment"]).value if "alignment" in op.attributes else 0

    def store_step(run: _Run) -> None:
        r = run.regs
        store(run, info, r[ref], [r[i] for i in idx], r[value], align)

    return store_step
