"""Writing one kernel function as MLIR text: fresh SSA names, hoisted constants, nested
``scf.for`` / ``scf.if`` blocks.

Kernels are generated per op instance (static sizes and attributes folded in), so a small text
builder is enough; MLIR's parser checks the result. Constants are collected and emitted at the
top of the function body, where they dominate every use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..text import float_literal


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


@dataclass
class Kernel:
    """One ``func.func`` under construction."""

    symbol: str
    params: list[tuple[str, str]]
    results: list[str] = field(default_factory=list)
    private: bool = True
    attributes: str = ""
    _lines: list[str] = field(default_factory=list)
    _constants: dict[tuple[str, str], str] = field(default_factory=dict)
    _names: dict[str, int] = field(default_factory=dict)
    _depth: int = 1

    # ----------------------------------------------------------------------- names and lines

    def fresh(self, hint: str) -> str:
        count = self._names.get(hint, 0)
        self._names[hint] = count + 1
        return f"%{hint}{count}"

    def line(self, text: str) -> None:
        self._lines.append("  " * self._depth + text)

    def op(self, hint: str, text: str) -> str:
        """Emits ``%name = text`` and returns the new name."""
        name = self.fresh(hint)
        self.line(f"{name} = {text}")
        return name

    # ----------------------------------------------------------------------- constants

    def constant(self, literal: str, type_: str) -> str:
        key = (literal, type_)
        if key not in self._constants:
            self._constants[key] = f"%k{len(self._constants)}"
        return self._constants[key]

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
        self._depth += 1
        loop = Loop(iv, args, results, types)
        yield loop
        if carried:
            if loop.yielded is None:
                raise ValueError("a loop with carried values must yield them")
            self.line(f"scf.yield {', '.join(loop.yielded)} : {', '.join(types)}")
        self._depth -= 1
        self.line("}")

    @contextmanager
    def if_(self, condition: str) -> Iterator[None]:
        """``scf.if`` without results or else branch."""
        self.line(f"scf.if {condition} {{")
        self._depth += 1
        yield
        self._depth -= 1
        self.line("}")

    @contextmanager
    def otherwise(self) -> Iterator[None]:
        """The else side of the ``if_`` just closed."""
        if not self._lines or self._lines[-1].strip() != "}":
            raise ValueError("otherwise() must directly follow an if_() block")
        self._lines[-1] = self._lines[-1].replace("}", "} else {")
        self._depth += 1
        yield
        self._depth -= 1
        self.line("}")

    @contextmanager
    def if_then(self, condition: str, types: Sequence[str]) -> Iterator[Branch]:
        """The then side of an ``scf.if`` with results; follow with ``else_(branch)``."""
        base = self.fresh("if")
        results = [f"{base}#{i}" for i in range(len(types))] if len(types) > 1 else [base]
        count = f":{len(types)}" if len(types) > 1 else ""
        self.line(f"{base}{count} = scf.if {condition} -> ({', '.join(types)}) {{")
        self._depth += 1
        branch = Branch(results, list(types))
        yield branch
        if branch.then_values is None:
            raise ValueError("the then side of an scf.if with results must set then_values")
        self.line(f"scf.yield {', '.join(branch.then_values)} : {', '.join(types)}")
        self._depth -= 1

    @contextmanager
    def else_(self, branch: Branch) -> Iterator[Branch]:
        self.line("} else {")
        self._depth += 1
        yield branch
        if branch.else_values is None:
            raise ValueError("the else side of an scf.if with results must set else_values")
        self.line(f"scf.yield {', '.join(branch.else_values)} : {', '.join(branch.types)}")
        self._depth -= 1
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
        params = ", ".join(f"{name}: {type_}" for name, type_ in self.params)
        visibility = "private " if self.private else ""
        results = ""
        if self.results:
            results = " -> " + (
                self.results[0] if len(self.results) == 1 else f"({', '.join(self.results)})"
            )
        attributes = f" attributes {{{self.attributes}}}" if self.attributes else ""
        head = f"func.func {visibility}@{self.symbol}({params}){results}{attributes} {{"
        constants = [
            f"  {name} = arith.constant {literal} : {type_}"
            for (literal, type_), name in self._constants.items()
        ]
        return "\n".join([head, *constants, *self._lines, "}"]) + "\n"
