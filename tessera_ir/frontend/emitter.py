"""Writes high-level IR as MLIR text, one op at a time.

Translations call the emitter with values (``TVal``, ``values.py``) and get values back; the
emitter writes types, attaches the current node's location to every op, and hoists sizes
(``tensor.dim``), scalar and dense constants to the top of the function, so those values are
visible inside every ``tessera.region``. Naming, lines and hoisting are the shared
``tessera.mlir_writer.BodyWriter``'s; reshapes and broadcasts are ``layout.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

import sympy
import torch

from tessera.errors import UnsupportedOpError
from tessera.mlir_text import scalar_literal, tensor_type
from tessera.mlir_writer import BodyWriter

from . import layout
from .types import Shape, dense_literal, element_type, is_static
from .values import Scalar, TVal


def identity_map(rank: int) -> str:
    dims = ", ".join(f"d{i}" for i in range(rank))
    return f"affine_map<({dims}) -> ({dims})>"


class Emitter(BodyWriter):
    """Accumulates the function body as text. ``symbols`` maps each symbolic size to the SSA
    name, axis and type of the function argument it is read from."""

    def __init__(self, symbols: dict[sympy.Symbol, tuple[str, int, str]]) -> None:
        super().__init__(locations=True)
        self.symbols = symbols
        self.op_name = ""
        self.module_path = ""

    # -- errors and text -------------------------------------------------------------------

    def unsupported(self, detail: str) -> NoReturn:
        """Fails the translation of the current node."""
        raise UnsupportedOpError(self.op_name, self.module_path, detail)

    def op(self, text: str) -> None:
        """Writes one op (or the closing line of a multi-line op) with the current location."""
        self.statement(text)

    # -- types and sizes -------------------------------------------------------------------

    def element(self, dtype: torch.dtype) -> str:
        found = element_type(dtype)
        if found is None:
            self.unsupported(f"dtype {dtype} is not supported")
        return found

    def type(self, shape: Shape, dtype: torch.dtype) -> str:
        return tensor_type(shape, self.element(dtype))

    def type_of(self, value: TVal) -> str:
        return self.type(value.shape, value.dtype)

    def index(self, dim: int | sympy.Expr) -> str:
        """An ``index`` value holding ``dim`` (computed once, in the prologue)."""
        if isinstance(dim, int) or dim.is_Integer:
            return self.hoist(f"arith.constant {int(dim)} : index")
        if dim.is_Symbol:
            if dim not in self.symbols:
                self.unsupported(f"size {dim} is not a dimension of an input")
            source, axis, type_ = self.symbols[dim]
            axis_value = self.index(axis)
            return self.hoist(f"tensor.dim {source}, {axis_value} : {type_}")
        combine = {sympy.Mul: "arith.muli", sympy.Add: "arith.addi"}.get(type(dim))
        if combine is None:
            self.unsupported(f"size expression {dim} is not a sum or product of input sizes")
        first, rest = dim.args[0], dim.func(*dim.args[1:])
        text = f"{combine} {self.index(first)}, {self.index(rest)} : index"
        return self.hoist(text)

    def dynamic_sizes(self, shape: Shape) -> list[str]:
        return [self.index(d) for d in shape if not is_static(d)]

    def mixed_sizes(self, shape: Shape) -> str:
        """Sizes as ``expand_shape``/``extract_slice`` take them: ints and index values."""
        return ", ".join(str(d) if is_static(d) else self.index(d) for d in shape)

    # -- values ----------------------------------------------------------------------------

    def value(self, value: TVal) -> str:
        """The SSA name of ``value``, writing a constant into the prologue on first use."""
        if value.name is None and value.unit_source is not None:
            # Written afresh at each use (see layout.reshape); CSE merges repeats.
            return self.value(layout.reshape_now(self, value.unit_source, value.shape))
        if value.name is None:
            assert value.const is not None
            literal = dense_literal(value.const)
            type_ = self.type_of(value)
            value.name = self.hoist(f"arith.constant dense<{literal}> : {type_}")
        return value.name

    def dense(self, tensor: torch.Tensor) -> TVal:
        """A constant tensor value, written when first used."""
        return TVal(None, tuple(tensor.shape), tensor.dtype, const=tensor)

    def empty(self, shape: Shape, dtype: torch.dtype) -> TVal:
        sizes = ", ".join(self.dynamic_sizes(shape))
        return TVal(self.assign(f"tensor.empty({sizes}) : {self.type(shape, dtype)}"), shape, dtype)

    def scalar(self, value: float | int | bool | sympy.Expr, dtype: torch.dtype) -> str:
        """A scalar ``arith.constant``, or a size converted to ``dtype`` (in the prologue)."""
        element = self.element(dtype)
        if isinstance(value, sympy.Expr) and not value.is_Integer:
            integer = self.hoist(f"arith.index_cast {self.index(value)} : index to i64")
            if not dtype.is_floating_point:
                return (
                    integer
                    if element == "i64"
                    else self.hoist(f"arith.trunci {integer} : i64 to {element}")
                )
            return self.hoist(f"arith.sitofp {integer} : i64 to {element}")
        literal = scalar_literal(value, element)
        return self.hoist(f"arith.constant {literal} : {element}")

    def splat(
        self,
        value: float | int | bool | sympy.Expr,
        shape: Shape,
        dtype: torch.dtype,
        fill: bool = False,
    ) -> TVal:
        """A tensor holding ``value`` everywhere: a dense constant for static shapes, else (or
        with ``fill``, for the init of a structured op, or for a size) a ``linalg.fill``."""
        symbolic = isinstance(value, sympy.Expr) and not value.is_Integer
        if not fill and not symbolic and all(is_static(d) for d in shape):
            return self.dense(torch.full(tuple(shape), value, dtype=dtype))
        scalar = self.scalar(value, dtype)
        init = self.empty(shape, dtype)
        type_ = self.type(shape, dtype)
        element = self.element(dtype)
        text = f"linalg.fill ins({scalar} : {element}) outs({init.name} : {type_}) -> {type_}"
        return TVal(self.assign(text), shape, dtype)

    def tensor(self, operand: TVal | Scalar, shape: Shape, dtype: torch.dtype) -> TVal:
        """``operand`` as a tensor of ``shape`` and ``dtype`` (cast, then broadcast)."""
        if isinstance(operand, Scalar):
            return self.splat(operand.value, shape, dtype)
        return layout.broadcast_to(self, self.cast(operand, dtype), shape)

    # -- elementwise -----------------------------------------------------------------------

    def unary(self, op: str, x: TVal) -> TVal:
        return TVal(self.assign(f"{op} {self.value(x)} : {self.type_of(x)}"), x.shape, x.dtype)

    def binary(self, op: str, a: TVal, b: TVal) -> TVal:
        """An elementwise op on two values of one shape and dtype."""
        text = f"{op} {self.value(a)}, {self.value(b)} : {self.type_of(a)}"
        return TVal(self.assign(text), a.shape, a.dtype)

    def compare(self, predicate: str, a: TVal, b: TVal) -> TVal:
        """``arith.cmpf``/``cmpi``; ``predicate`` is the float one (olt, oeq, une, ...)."""
        if a.dtype.is_floating_point:
            text = f"arith.cmpf {predicate}, {self.value(a)}, {self.value(b)} : {self.type_of(a)}"
        else:
            integer = {
                "oeq": "eq",
                "une": "ne",
                "olt": "slt",
                "ole": "sle",
                "ogt": "sgt",
                "oge": "sge",
            }[predicate]
            text = f"arith.cmpi {integer}, {self.value(a)}, {self.value(b)} : {self.type_of(a)}"
        return TVal(self.assign(text), a.shape, torch.bool)

    def select(self, condition: TVal, a: TVal, b: TVal) -> TVal:
        text = (
            f"arith.select {self.value(condition)}, {self.value(a)}, {self.value(b)} : "
            f"{self.type_of(condition)}, {self.type_of(a)}"
        )
        return TVal(self.assign(text), a.shape, a.dtype)

    def cast(self, x: TVal, dtype: torch.dtype) -> TVal:
        """Converts like ``Tensor.to(dtype)``."""
        if x.dtype == dtype:
            return x
        if dtype == torch.bool:
            return self.compare("une", x, self.splat(0, x.shape, x.dtype))
        source, target = x.dtype, dtype
        if source.is_floating_point and target.is_floating_point:
            wider = torch.finfo(target).bits > torch.finfo(source).bits
            op = "arith.extf" if wider else "arith.truncf"
        elif source.is_floating_point:
            op = "arith.fptosi"
        elif target.is_floating_point:
            op = "arith.uitofp" if source == torch.bool else "arith.sitofp"
        elif source == torch.bool:
            op = "arith.extui"
        else:
            wider = torch.iinfo(target).bits > torch.iinfo(source).bits
            op = "arith.extsi" if wider else "arith.trunci"
        text = f"{op} {self.value(x)} : {self.type_of(x)} to {self.type(x.shape, dtype)}"
        return TVal(self.assign(text), x.shape, dtype)

    # -- structured ops --------------------------------------------------------------------

    def generic(
        self,
        shape: Shape,
        dtype: torch.dtype,
        inputs: Sequence[tuple[TVal, str]],
        body: Callable[[list[str]], str],
    ) -> TVal:
        """An all-parallel ``linalg.generic`` producing ``shape``; ``inputs`` pairs each operand
        with its indexing map, ``body`` writes the block (given its argument names) and returns
        the value to yield."""
        init = self.empty(shape, dtype)
        rank = len(shape)
        maps = ", ".join([m for _, m in inputs] + [identity_map(rank)])
        iterators = ", ".join(['"parallel"'] * rank)
        ins = ""
        if inputs:
            names = ", ".join(self.value(v) for v, _ in inputs)
            types = ", ".join(self.type_of(v) for v, _ in inputs)
            ins = f"ins({names} : {types}) "
        name = self.fresh()
        type_ = self.type(shape, dtype)
        self.line(
            f"{name} = linalg.generic {{indexing_maps = [{maps}], iterator_types = "
            f"[{iterators}]}} {ins}outs({init.name} : {type_}) {{"
        )
        arguments = [self.fresh("a") for _ in range(len(inputs) + 1)]
        elements = [self.element(v.dtype) for v, _ in inputs] + [self.element(dtype)]
        self.line(
            "^bb0("
            + ", ".join(f"{a}: {e}" for a, e in zip(arguments, elements, strict=True))
            + "):"
        )
        self.depth += 1
        result = body(arguments)
        self.op(f"linalg.yield {result} : {self.element(dtype)}")
        self.depth -= 1
        self.op(f"}} -> {type_}")
        return TVal(name, shape, dtype)

    def reduce(self, x: TVal, dims: list[int], combiner: str, init_value: float) -> TVal:
        """``linalg.reduce`` of ``x`` over ``dims`` with ``combiner`` (an arith op), from a
        filled init; the result drops the reduced dims."""
        shape = tuple(d for i, d in enumerate(x.shape) if i not in dims)
        init = self.splat(init_value, shape, x.dtype, fill=True)
        element = self.element(x.dtype)
        name = self.fresh()
        self.line(
            f"{name} = linalg.reduce ins({self.value(x)} : {self.type_of(x)}) "
            f"outs({self.value(init)} : {self.type(shape, x.dtype)}) "
            f"dimensions = [{', '.join(map(str, dims))}]"
        )
        a, b = self.fresh("a"), self.fresh("a")
        self.line(f"  ({a}: {element}, {b}: {element}) {{")
        self.depth += 2
        combined = self.assign(f"{combiner} {a}, {b} : {element}")
        self.op(f"linalg.yield {combined} : {element}")
        self.depth -= 2
        self.op("  }")
        return TVal(name, shape, x.dtype)
