"""Symbolic shapes: every tensor value's dims as integer expressions over the program's symbols.

Buffer sizes, arena offsets and launch grids depend on the dynamic sizes (``B``, ``S``); the
manifest stores them as text in the grammar of ``tessera.runtime.expr``. Dims are kept as
``Poly``: polynomials with integer coefficients whose factors are symbols (``S``) or opaque
atoms for what a polynomial cannot say (``cdiv(S, 64)``, ``(S//2)``, ``min(S, 6)``). Equal
sizes then print equally (``B*S``, never ``S*B``), constants fold, and two sizes can be
compared by their coefficients, which the memory planner needs to reuse a slice safely.

Where the symbols come from: the function's ``tessera.dims`` dictionary (``{input_ids = ["B",
"S"]}``), else an argument's own ``tessera.dims`` array, else ``<arg name>_<axis>``. Every
symbol is an integer >= 1.
"""

from __future__ import annotations

import ast
import functools
import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import PassError
from tessera.runtime.expr import ExprError, evaluate
from tessera.runtime.expr import parse as parse_expr

Monomial = tuple[str, ...]  # sorted factors, a factor repeated for a power
DIMS_ATTR = "tessera.dims"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


@dataclass(frozen=True)
class Poly:
    """A polynomial over symbols and atoms; ``terms`` are canonical (sorted, no zeros)."""

    terms: tuple[tuple[Monomial, int], ...] = ()

    @staticmethod
    def of(terms: Mapping[Monomial, int]) -> Poly:
        ordered = sorted(((m, c) for m, c in terms.items() if c), key=lambda t: (-len(t[0]), t[0]))
        return Poly(tuple(ordered))

    @staticmethod
    def const(value: int) -> Poly:
        return Poly.of({(): value})

    @staticmethod
    def factor(name: str) -> Poly:
        return Poly.of({(name,): 1})

    @staticmethod
    def parse(text: str | int) -> Poly:
        """The polynomial of an expression in ``tessera.runtime.expr``'s grammar."""
        return _parse(str(text))

    def __add__(self, other: Poly | int) -> Poly:
        merged = dict(self.terms)
        for monomial, coefficient in _poly(other).terms:
            merged[monomial] = merged.get(monomial, 0) + coefficient
        return Poly.of(merged)

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly.of({m: -c for m, c in self.terms})

    def __sub__(self, other: Poly | int) -> Poly:
        return self + -_poly(other)

    def __mul__(self, other: Poly | int) -> Poly:
        product: dict[Monomial, int] = {}
        for (ma, ca), (mb, cb) in itertools.product(self.terms, _poly(other).terms):
            monomial = tuple(sorted(ma + mb))
            product[monomial] = product.get(monomial, 0) + ca * cb
        return Poly.of(product)

    __rmul__ = __mul__

    def as_int(self) -> int | None:
        if not self.terms:
            return 0
        if len(self.terms) == 1 and not self.terms[0][0]:
            return self.terms[0][1]
        return None

    def divisible_by(self, divisor: int) -> bool:
        return all(c % divisor == 0 for _, c in self.terms)

    def floordiv(self, other: Poly | int) -> Poly:
        return self._divide(_poly(other), "//")

    def cdiv(self, other: Poly | int) -> Poly:
        return self._divide(_poly(other), "cdiv")

    def mod(self, other: Poly | int) -> Poly:
        return self._divide(_poly(other), "%")

    def _divide(self, divisor: Poly, how: str) -> Poly:
        d, n = divisor.as_int(), self.as_int()
        if d == 0:
            raise ZeroDivisionError(f"{self} {how} 0")
        if d is not None and n is not None:
            return Poly.const({"//": n // d, "cdiv": -(-n // d), "%": n % d}[how])
        if d is not None and self.divisible_by(d):
            return Poly.const(0) if how == "%" else Poly.of({m: c // d for m, c in self.terms})
        common = math.gcd(d or 0, *(c for _, c in self.terms)) if how != "%" else 1
        if d is not None and d > 0 and common > 1:
            # floor(g·x / g·k) = floor(x / k): cdiv(128*B*S, 256) is cdiv(B*S, 2).
            return Poly.of({m: c // common for m, c in self.terms})._divide(
                Poly.const(d // common), how
            )
        if how == "cdiv":
            return Poly.factor(f"cdiv({self}, {divisor})")
        return Poly.factor(f"({_paren(self)}{how}{_paren(divisor)})")

    def minimum(self, other: Poly | int) -> Poly:
        return self._extreme(_poly(other), "min")

    def maximum(self, other: Poly | int) -> Poly:
        return self._extreme(_poly(other), "max")

    def _extreme(self, other: Poly, how: str) -> Poly:
        if (self - other).nonnegative():
            return other if how == "min" else self
        if (other - self).nonnegative():
            return self if how == "min" else other
        a, b = sorted((str(self), str(other)))
        return Poly.factor(f"{how}({a}, {b})")

    def nonnegative(self) -> bool:
        """True when provably >= 0 for every symbol >= 1. Each ``cdiv(x, k)`` is replaced by
        the bound on its side, x/k below it or (x + k - 1)/k above it; then with each symbol
        written 1 + y (y >= 0) and each other atom known to be >= 0, every coefficient must be
        >= 0. (A sufficient test: ``S*S - S`` passes, ``S - 2`` rightly fails, ``(S - 1)*(S -
        1)`` is missed.)"""
        shifted: dict[Monomial, Fraction] = {}
        for monomial, coefficient in _without_cdiv(self.terms).items():
            atoms = tuple(f for f in monomial if not _IDENTIFIER.fullmatch(f))
            if not all(_atom_nonnegative(a) for a in atoms):
                return False
            symbols = [f for f in monomial if _IDENTIFIER.fullmatch(f)]
            for keep in itertools.product((False, True), repeat=len(symbols)):
                key = tuple(
                    sorted(atoms + tuple(s for s, k in zip(symbols, keep, strict=True) if k))
                )
                shifted[key] = shifted.get(key, Fraction(0)) + coefficient
        return all(c >= 0 for c in shifted.values())

    def covers(self, other: Poly | int) -> bool:
        """``self >= other`` for every symbol >= 1 (as far as ``nonnegative`` can tell)."""
        return (self - other).nonnegative()

    def evaluate(self, env: Mapping[str, int]) -> int:
        return evaluate(str(self), env)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        out = ""
        for monomial, coefficient in self.terms:
            magnitude = abs(coefficient)
            parts = ([str(magnitude)] if magnitude != 1 or not monomial else []) + list(monomial)
            term = "*".join(parts)
            if not out:
                out = term if coefficient > 0 else f"-{term}"
            else:
                out += f" + {term}" if coefficient > 0 else f" - {term}"
        return out


def _poly(value: Poly | int) -> Poly:
    return value if isinstance(value, Poly) else Poly.const(value)


def _paren(value: Poly) -> str:
    """``value`` as an operand of ``//`` or ``%``: parenthesized unless it is one factor or a
    non-negative integer."""
    number = value.as_int()
    single = len(value.terms) == 1 and value.terms[0][1] == 1 and len(value.terms[0][0]) == 1
    return str(value) if single or (number is not None and number >= 0) else f"({value})"


_BINARY: dict[type, Callable[[Poly, Poly], Poly]] = {
    ast.Add: Poly.__add__,
    ast.Sub: Poly.__sub__,
    ast.Mult: Poly.__mul__,
    ast.FloorDiv: Poly.floordiv,
    ast.Mod: Poly.mod,
}
_CALLS: dict[str, Callable[[Poly, Poly], Poly]] = {
    "cdiv": Poly.cdiv,
    "min": Poly.minimum,
    "max": Poly.maximum,
}


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Poly:
    parse_expr(text)  # rejects what the grammar does not allow, with its own message
    return _from_ast(ast.parse(text, mode="eval").body)


def _from_ast(node: ast.expr) -> Poly:
    # Only nodes that tessera.runtime.expr accepts reach here (Poly.parse checks first).
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return Poly.const(node.value)
    if isinstance(node, ast.Name):
        return Poly.factor(node.id)
    if isinstance(node, ast.UnaryOp):
        return -_from_ast(node.operand)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_from_ast(node.left), _from_ast(node.right))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    a, b = (_from_ast(arg) for arg in node.args)
    return _CALLS[node.func.id](a, b)


@functools.lru_cache(maxsize=1024)
def _cdiv_by_constant(atom: str) -> tuple[Poly, int] | None:
    """(x, k) for an atom ``cdiv(x, k)`` with a constant k > 0, else None."""
    if not atom.startswith("cdiv("):
        return None
    node = ast.parse(atom, mode="eval").body
    assert isinstance(node, ast.Call)
    x, k = (_from_ast(arg) for arg in node.args)
    divisor = k.as_int()
    return (x, divisor) if divisor is not None and divisor > 0 else None


def _without_cdiv(terms: tuple[tuple[Monomial, int], ...]) -> dict[Monomial, Fraction]:
    """Terms of a polynomial <= the given one, with every ``cdiv(x, k)`` (k constant) replaced
    by x/k where its coefficient is positive and by (x + k - 1)/k where it is negative. The
    bound holds only if the rest of its monomial is >= 0; where that is unknown the atom
    stays, for the caller's atom check."""
    pending = [(m, Fraction(c)) for m, c in terms]
    done: dict[Monomial, Fraction] = {}
    while pending:
        monomial, coefficient = pending.pop()
        found = next(
            ((i, d) for i, f in enumerate(monomial) if (d := _cdiv_by_constant(f)) is not None),
            None,
        )
        others = [f for j, f in enumerate(monomial) if found is None or j != found[0]]
        if found is None or not all(
            _IDENTIFIER.fullmatch(f) or _atom_nonnegative(f) for f in others
        ):
            done[monomial] = done.get(monomial, Fraction(0)) + coefficient
            continue
        i, (x, k) = found
        rest = monomial[:i] + monomial[i + 1 :]
        bound = x if coefficient > 0 else x + (k - 1)
        for inner, c in bound.terms:
            pending.append((tuple(sorted(rest + inner)), coefficient * c / k))
    return done


@functools.lru_cache(maxsize=1024)
def _atom_nonnegative(text: str) -> bool:
    """Whether an atom (``cdiv(a, b)``, ``(a//b)``, ``(a%b)``, ``min``/``max``) is >= 0."""
    node = ast.parse(text, mode="eval").body
    if isinstance(node, ast.BinOp):
        a, b = _from_ast(node.left), _from_ast(node.right)
        positive = (b - 1).nonnegative()
        return positive if isinstance(node.op, ast.Mod) else positive and a.nonnegative()
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    a, b = (_from_ast(arg) for arg in node.args)
    if node.func.id == "cdiv":
        return a.nonnegative() and (b - 1).nonnegative()
    if node.func.id == "min":
        return a.nonnegative() and b.nonnegative()
    return a.nonnegative() or b.nonnegative()


# --------------------------------------------------------------------------- the analysis

Shape = tuple[Poly, ...]


def located(message: str, op: ir.Operation) -> PassError:
    return PassError(message, source_location(op.location))


def numel(shape: Shape) -> Poly:
    return math.prod(shape, start=Poly.const(1))


def _arg_attrs(func_op: ir.Operation, key: str, count: int) -> list[ir.DictAttr]:
    if key not in func_op.attributes:
        return [ir.DictAttr.get({}, context=func_op.context) for _ in range(count)]
    return [ir.DictAttr(a) for a in ir.ArrayAttr(func_op.attributes[key])]


def arg_name(attrs: ir.DictAttr, index: int) -> str:
    """An argument's name: its ``tessera.input``/``tessera.weight``, else ``arg<index>``."""
    for key in ("tessera.input", "tessera.weight"):
        if key in attrs:
            return str(ir.StringAttr(attrs[key]).value)
    return f"arg{index}"


def _dim_entries(attr: ir.Attribute, where: str, op: ir.Operation) -> list[Poly]:
    entries = []
    if not isinstance(attr, ir.ArrayAttr):
        raise located(
            f"{DIMS_ATTR} of {where} must be an array of symbol names or integers, found {attr}",
            op,
        )
    for item in attr:
        try:
            if isinstance(item, ir.IntegerAttr):
                entries.append(Poly.const(int(item.value)))
            else:
                entries.append(Poly.parse(str(ir.StringAttr(item).value)))
        except (ExprError, ValueError) as problem:
            raise located(f"{DIMS_ATTR} of {where}: {problem}", op) from None
    return entries


def argument_shapes(func_op: ir.Operation) -> list[Shape | None]:
    """Each argument's dims (None for non-tensors), from the ``tessera.dims`` attributes."""
    block = func_op.regions[0].blocks[0]
    named: dict[str, ir.Attribute] = {}
    if DIMS_ATTR in func_op.attributes:
        table = ir.DictAttr(func_op.attributes[DIMS_ATTR])
        named = {table[i].name: table[i].attr for i in range(len(table))}
    shapes: list[Shape | None] = []
    for index, (arg, attrs) in enumerate(
        zip(block.arguments, _arg_attrs(func_op, "arg_attrs", len(block.arguments)), strict=True)
    ):
        type_ = arg.type
        if not isinstance(type_, ir.RankedTensorType):
            shapes.append(None)
            continue
        name = arg_name(attrs, index)
        given = named.pop(name, attrs[DIMS_ATTR] if DIMS_ATTR in attrs else None)
        where = f"argument #{index} ('{name}')"
        if given is None:
            symbol = re.sub(r"\W", "_", name)
            dims = [Poly.factor(f"{symbol}_{axis}") for axis in range(type_.rank)]
        else:
            dims = _dim_entries(given, where, func_op)
            if len(dims) != type_.rank:
                raise located(
                    f"{DIMS_ATTR} of {where} has {len(dims)} dims; {type_} has rank {type_.rank}",
                    func_op,
                )
        for axis in range(type_.rank):
            if type_.is_dynamic_dim(axis):
                continue
            size = type_.get_dim_size(axis)
            if given is not None and dims[axis].as_int() != size:
                raise located(
                    f"{DIMS_ATTR} of {where} says dim {axis} is {dims[axis]}, but its "
                    f"type {type_} says {size}",
                    func_op,
                )
            dims[axis] = Poly.const(size)
        shapes.append(tuple(dims))
    if named:
        raise located(
            f"{DIMS_ATTR} names {', '.join(sorted(named))}, which are not arguments "
            "of the function",
            func_op,
        )
    return shapes


_ELEMENTWISE_DIALECTS = ("arith.", "math.")
_LIKE_FIRST = ("tessera.norm.rms", "tessera.rope.apply", "tessera.mlp.swi_glu", "tensor.cast")
_INDEX_BINARY: dict[str, Callable[[Poly, Poly], Poly]] = {
    "arith.addi": Poly.__add__,
    "arith.subi": Poly.__sub__,
    "arith.muli": Poly.__mul__,
    "arith.divsi": Poly.floordiv,
    "arith.divui": Poly.floordiv,
    "arith.floordivsi": Poly.floordiv,
    "arith.ceildivsi": Poly.cdiv,
    "arith.ceildivui": Poly.cdiv,
    "arith.remsi": Poly.mod,
    "arith.remui": Poly.mod,
    "arith.minsi": Poly.minimum,
    "arith.minui": Poly.minimum,
    "arith.maxsi": Poly.maximum,
    "arith.maxui": Poly.maximum,
}


class _Shapes:
    """Walks a function in order, giving each tensor value its dims and each index value the
    size it holds."""

    def __init__(self, func_op: ir.Operation) -> None:
        self.state = ir.AsmState(func_op)
        self.tensors: dict[ir.Value, Shape] = {}
        self.scalars: dict[ir.Value, Poly] = {}
        block = func_op.regions[0].blocks[0]
        for arg, shape in zip(block.arguments, argument_shapes(func_op), strict=True):
            if shape is not None:
                self.tensors[arg] = shape
        self.visit(block)

    def name(self, value: ir.Value) -> str:
        return value.get_name(self.state)

    def visit(self, block: ir.Block) -> None:
        for view in block.operations:
            op = view.operation
            if op.name == "tessera.region":
                # Inputs flow into the body's arguments, the yielded values out as results.
                body = op.regions[0].blocks[0]
                for arg, value in zip(body.arguments, op.operands, strict=True):
                    self.tensors[arg] = self.shape(value, op)
                self.visit(body)
                yielded = list(body.operations)[-1].operation.operands
                for result, value in zip(op.results, yielded, strict=True):
                    self.tensors[result] = self.shape(value, op)
                continue
            for result in op.results:
                if isinstance(result.type, ir.RankedTensorType):
                    self.tensors[result] = self.result_shape(op, result)

    def shape(self, value: ir.Value, user: ir.Operation) -> Shape:
        if value not in self.tensors:
            raise located(f"'{user.name}' uses {self.name(value)}, whose dims are unknown", user)
        return self.tensors[value]

    def scalar(self, value: ir.Value, user: ir.Operation) -> Poly:
        """The size an index (or integer) value holds, from constants, tensor.dim and arith."""
        if value in self.scalars:
            return self.scalars[value]
        op = value.owner.operation if isinstance(value, ir.OpResult) else None
        found: Poly | None = None
        if op is not None and op.name == "arith.constant":
            attr = op.attributes["value"]
            found = (
                Poly.const(int(ir.IntegerAttr(attr).value))
                if isinstance(attr, ir.IntegerAttr)
                else None
            )
        elif op is not None and op.name == "tensor.dim":
            axis = self.scalar(op.operands[1], op).as_int()
            source = self.shape(op.operands[0], op)
            found = source[axis] if axis is not None and 0 <= axis < len(source) else None
        elif op is not None and op.name in ("arith.index_cast", "arith.index_castui"):
            found = self.scalar(op.operands[0], op)
        elif op is not None and op.name in _INDEX_BINARY:
            a, b = (self.scalar(v, op) for v in op.operands)
            try:
                found = _INDEX_BINARY[op.name](a, b)
            except ZeroDivisionError:
                raise located(f"{self.name(value)} divides by zero", op) from None
        if found is None:
            where = op if op is not None else user
            made = f"'{op.name}'" if op is not None else "a block argument"
            raise located(
                f"the size {self.name(value)} (made by {made}) cannot be written as "
                "an expression over the dims' symbols",
                where,
            )
        self.scalars[value] = found
        return found

    def result_shape(self, op: ir.Operation, result: ir.OpResult) -> Shape:
        type_ = ir.RankedTensorType(result.type)
        static = [
            None if type_.is_dynamic_dim(a) else type_.get_dim_size(a) for a in range(type_.rank)
        ]
        if all(d is not None for d in static):
            return tuple(Poly.const(d) for d in static)  # type: ignore[arg-type]
        derived = self.derive(op, result.result_number, type_.rank)
        if derived is None or len(derived) != type_.rank:
            raise located(
                f"cannot express the dims of {self.name(result)} ({type_}): no shape "
                f"rule for '{op.name}'",
                op,
            )
        return tuple(
            Poly.const(s) if s is not None else d for s, d in zip(static, derived, strict=True)
        )

    def derive(self, op: ir.Operation, number: int, rank: int) -> list[Poly] | None:
        """The result's dims by the op's shape rule (static dims get overridden by the type)."""
        name, operands = op.name, list(op.operands)
        if name in ("tensor.empty", "tensor.expand_shape"):
            # Dynamic dims come from the operands (expand_shape: its output_shape), in order.
            dynamic = iter(
                self.scalar(v, op) for v in operands[1 if name != "tensor.empty" else 0 :]
            )
            type_ = ir.RankedTensorType(op.results[0].type)
            return [
                next(dynamic) if type_.is_dynamic_dim(a) else Poly.const(0) for a in range(rank)
            ]
        if name == "tensor.collapse_shape":
            source = self.shape(operands[0], op)
            groups = [
                [int(ir.IntegerAttr(i).value) for i in ir.ArrayAttr(g)]
                for g in ir.ArrayAttr(op.attributes["reassociation"])
            ]
            return [numel(tuple(source[i] for i in group)) for group in groups]
        if name == "tessera.tensor.lookup":
            return [*self.shape(operands[1], op), self.shape(operands[0], op)[1]]
        if name == "tessera.mma.proj":
            transpose = (
                "transpose_w" in op.attributes and ir.BoolAttr(op.attributes["transpose_w"]).value
            )
            w = self.shape(operands[1], op)
            return [*self.shape(operands[0], op)[:-1], w[0] if transpose else w[1]]
        if name == "tessera.sample.greedy":
            return list(self.shape(operands[0], op)[:-1])
        if name == "tessera.attention.flash":
            q, v = self.shape(operands[0], op), self.shape(operands[2], op)
            return [*q[:3], v[3]]
        if name == "tessera.attention.paged":
            # [B, Hq, S] of the queries; the value dim comes from the cache, static in the type.
            return [*self.shape(operands[0], op)[:3], Poly.const(0)]
        if name in _LIKE_FIRST:
            return list(self.shape(operands[0], op))
        if name.startswith("linalg.") and len(operands) >= len(op.results):
            # Destination style: result i has the shape of the i-th outs (the trailing operands).
            outs = operands[len(operands) - len(op.results) :]
            return list(self.shape(outs[number], op))
        if name.startswith(_ELEMENTWISE_DIALECTS):
            for value in operands:
                shaped = value.type
                if isinstance(shaped, ir.RankedTensorType) and shaped.rank == rank:
                    return list(self.shape(value, op))
        return None


def shape_polys(func_op: ir.Operation) -> dict[ir.Value, Shape]:
    """Every tensor value's dims as polynomials (see ``shape_exprs``)."""
    with func_op.context:
        return _Shapes(func_op).tensors


def shape_exprs(func_op: ir.Operation) -> dict[ir.Value, tuple[str, ...]]:
    """Every tensor value of ``func_op`` (a ``func.func``), mapped to its dims as expressions
    over the symbols (``("B", "S", "64")``, ``("B*S", "96")``). Raises a ``PassError`` at the
    op for a value whose dims cannot be expressed."""
    return {v: tuple(str(d) for d in dims) for v, dims in shape_polys(func_op).items()}
