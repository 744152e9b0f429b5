"""Writing one kernel function as MLIR text: the shared body writer
(``tessera.mlir_writer``) with index arithmetic and nested ``scf.for`` / ``scf.if`` blocks.

Kernels are generated per op instance (static sizes and attributes folded in), so a text
builder is enough; MLIR's parser checks the result. Constants are hoisted to the top of the
function body, where they dominate every use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tessera.mlir_text import float_literal
from tessera.mlir_writer import BodyWriter


@dataclass
class Loop:
    """An open ``scf.for``: its induction variable, iteration arguments and results."""

    iv: str
    args: list[str]
    results: list[str]
    types: list[str]
    yielded: list[str] | None = None

    def yield_(self, values: Sequence[str]) -> None:
        if len(values) != len(self.types):
            raise ValueError(f"loop carries {len(self.types)} values, yield gives {len(values)}")
        self.yielded = list(values)


@dataclass
class Branch:
    """An open ``scf.if`` with results: each side sets its yielded values."""

    results: list[str]
    types: list[str]
    then_values: list[str] | None = None
    else_values: list[str] | None = None


class Kernel(BodyWriter):
    """One ``func.func`` under construction: ``params`` are (name, type) pairs."""

    def __init__(
        self,
        symbol: str,
        params: list[tuple[str, str]],
        results: Sequence[str] = (),
        private: bool = True,
        attributes: str = "",
    ) -> None:
        super().__init__()
        self.symbol = symbol
        self.params = params
        self.results = list(results)
        self.private = private
        self.attributes = attributes

    def op(self, hint: str, text: str) -> str:
        """Emits ``%name = text`` and returns the new name."""
        return self.assign(text, hint)

    # ----------------------------------------------------------------------- constants

    def index(self, value: int) -> str:
        return self.constant(str(int(value)), "index")

    def i32(self, value: int) -> str:
        return self.constant(str(int(value)), "i32")

    def f32(self, value: float) -> str:
        return self.constant(float_literal(value, "f32"), "f32")

    def splat(self, value: float, vector: str) -> str:
        """A constant vector with every lane ``value`` (``vector`` is e.g. vector<16xf32>)."""
        element = vector.rsplit("x", 1)[1].rstrip(">")
        return self.constant(f"dense<{float_literal(value, element)}>", vector)

    def splat_int(self, value: int, vector: str) -> str:
        return self.constant(f"dense<{int(value)}>", vector)

    # ----------------------------------------------------------------------- index arithmetic

    def as_index(self, value: str | int) -> str:
        """An index SSA value: ``value`` itself, or the constant for an int."""
        return self.index(value) if isinstance(value, int) else value

    def _index_op(self, opname: str, a: str, b: str | int) -> str:
        return self.op("i", f"{opname} {a}, {self.as_index(b)} : index")

    def add(self, a: str, b: str | int) -> str:
        return a if isinstance(b, int) and b == 0 else self._index_op("arith.addi", a, b)

    def sub(self, a: str, b: str | int) -> str:
        return self._index_op("arith.subi", a, b)

    def mul(self, a: str, b: str | int) -> str:
        return self._index_op("arith.muli", a, b)

    def min(self, a: str, b: str | int) -> str:
        return self._index_op("arith.minsi", a, b)

    def max(self, a: str, b: str | int) -> str:
        return self._index_op("arith.maxsi", a, b)

    def floor_to(self, a: str, multiple: int) -> str:
        """``a`` rounded down to a multiple of ``multiple`` (``a`` ≥ 0)."""
        if multiple == 1:
            return a
        rem = self.op("i", f"arith.remui {a}, {self.index(multiple)} : index")
        return self.sub(a, rem)

    def cmp(self, predicate: str, a: str, b: str | int) -> str:
        return self.op("p", f"arith.cmpi {predicate}, {a}, {self.as_index(b)} : index")

    # ----------------------------------------------------------------------- structure

    @contextmanager
    def loop(
        self, lo: str | int, hi: str | int, step: str | int, carried: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Loop]:
        """``scf.for`` from ``lo`` to ``hi``; ``carried`` is (initial value, type) pairs."""
        lo, hi, step = (self.as_index(v) for v in (lo, hi, step))
        iv = self.fresh("iv")
        args = [self.fresh("arg") for _ in carried]
        types = [t for _, t in carried]
        results: list[str] = []
        head = f"scf.for {iv} = {lo} to {hi} step {step}"
        if carried:
            base = self.fresh("for")
            results = [f"{base}#{i}" for i in range(len(carried))] if len(carried) > 1 else [base]
            inits = ", ".join(f"{a} = {v}" for a, (v, _) in zip(args, carried, strict=True))
            head = f"{base}{':' + str(len(carried)) if len(carried) > 1 else ''} = {head} "
            head += f"iter_args({inits}) -> ({', '.join(types)})"
        self.line(head + " {")
        self.depth += 1
        loop = Loop(iv, args, results, types)
        yield loop
        if carried:
            if loop.yielded is None:
                raise ValueError("a loop with carried values must yield them")
            self.line(f"scf.yield {', '.join(loop.yielded)} : {', '.join(types)}")
        self.depth -= 1
        self.line("}")

    @contextmanager
    def if_(self, condition: str) -> Iterator[None]:
        """``scf.if`` without results or else branch."""
        self.line(f"scf.if {condition} {{")
        self.depth += 1
        yield
        self.depth -= 1
        self.line("}")

    @contextmanager
    def otherwise(self) -> Iterator[None]:
        """The else side of the ``if_`` just closed."""
        if not self.lines or self.lines[-1].strip() != "}":
            raise ValueError("otherwise() must directly follow an if_() block")
        self.lines[-1] = self.lines[-1].replace("}", "} else {")
        self.depth += 1
        yield
        self.depth -= 1
        self.line("}")

    @contextmanager
    def if_then(self, condition: str, types: Sequence[str]) -> Iterator[Branch]:
        """The then side of an ``scf.if`` with results; follow with ``else_(branch)``."""
        base = self.fresh("if")
        results = [f"{base}#{i}" for i in range(len(types))] if len(types) > 1 else [base]
        count = f":{len(types)}" if len(types) > 1 else ""
        self.line(f"{base}{count} = scf.if {condition} -> ({', '.join(types)}) {{")
        self.depth += 1
        branch = Branch(results, list(types))
        yield branch
        if branch.then_values is None:
            raise ValueError("the then side of an scf.if with results must set then_values")
        self.line(f"scf.yield {', '.join(branch.then_values)} : {', '.join(types)}")
        self.depth -= 1

    @contextmanager
    def else_(self, branch: Branch) -> Iterator[Branch]:
        self.line("} else {")
        self.depth += 1
        yield branch
        if branch.else_values is None:
            raise ValueError("the else side of an scf.if with results must set else_values")
        self.line(f"scf.yield {', '.join(branch.else_values)} : {', '.join(branch.types)}")
        self.depth -= 1
        self.line("}")

    # ----------------------------------------------------------------------- calls

    def call_out_of_line(self, callee: str, args: Sequence[str], types: Sequence[str]) -> None:
        """``func.call @callee(args)`` marked ``no_inline``: kernel cores stay out of line, one
        copy per distinct kernel however many ops use it."""
        self.line(
            f"func.call @{callee}({', '.join(args)}) {{no_inline}} : ({', '.join(types)}) -> ()"
        )

    # ----------------------------------------------------------------------- output

    def text(self) -> str:
        return self.function(
            self.symbol,
            self.params,
            self.results,
            private=self.private,
            attributes=self.attributes,
        )
