"""The machinery for declaring an op: operands, results, attributes, traits and a verifier.

MLIR's IRDL cannot name ops with dots (``tessera.attention.flash``), so the tessera dialect is
held here in Python and its ops travel through MLIR as unregistered ops in generic syntax.
A schema is a class; its fields are its operands, results and attributes, in order:

    @op("tessera.norm.rms", pure=True)
    class RmsNorm(OpDef):
        x = operand(tensor(min_rank=1, elements=FLOAT))
        ...
        eps = attr(F32())

The generic checks (counts, types, attributes) run first; ``OpDef.verify`` adds the op's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from mlir import ir

from .diagnostics import source_location
from .errors import VerifyError

FLOAT = ("f16", "bf16", "f32", "f64")
INTEGER = ("i1", "i8", "i16", "i32", "i64", "index")

_MISSING: Any = object()


# --------------------------------------------------------------------------- type constraints


@dataclass(frozen=True)
class TensorType:
    """A ranked tensor with an optional rank (exact or minimum) and element types."""

    rank: int | None = None
    min_rank: int | None = None
    elements: tuple[str, ...] | None = None

    def describe(self) -> str:
        parts = ["ranked tensor"]
        if self.rank is not None:
            parts.append(f"of rank {self.rank}")
        elif self.min_rank is not None:
            parts.append(f"of rank >= {self.min_rank}")
        if self.elements is not None:
            parts.append("of " + "/".join(self.elements))
        return " ".join(parts)

    def check(self, type_: ir.Type) -> bool:
        if not isinstance(type_, ir.RankedTensorType):
            return False
        tensor_type = type_
        if self.rank is not None and tensor_type.rank != self.rank:
            return False
        if self.min_rank is not None and tensor_type.rank < self.min_rank:
            return False
        return self.elements is None or str(tensor_type.element_type) in self.elements


def tensor(
    rank: int | None = None, min_rank: int | None = None, elements: Sequence[str] | None = None
) -> TensorType:
    return TensorType(rank, min_rank, tuple(elements) if elements is not None else None)


@dataclass(frozen=True)
class MemRefType:
    """A ranked memref with an optional exact rank and element types: memory that an op reads
    or writes in place (state that lives across calls, such as a KV cache), where a tensor
    would be a value."""

    rank: int | None = None
    elements: tuple[str, ...] | None = None

    def describe(self) -> str:
        parts = ["ranked memref"]
        if self.rank is not None:
            parts.append(f"of rank {self.rank}")
        if self.elements is not None:
            parts.append("of " + "/".join(self.elements))
        return " ".join(parts)

    def check(self, type_: ir.Type) -> bool:
        if not isinstance(type_, ir.MemRefType):
            return False
        if self.rank is not None and type_.rank != self.rank:
            return False
        return self.elements is None or str(type_.element_type) in self.elements


def memref(rank: int | None = None, elements: Sequence[str] | None = None) -> MemRefType:
    return MemRefType(rank, tuple(elements) if elements is not None else None)


# --------------------------------------------------------------------------- attribute kinds


class AttrKind:
    """How one attribute is spelled in MLIR and read into Python."""

    syntax: str  # how the attribute is written, for error messages

    def read(self, attr: ir.Attribute) -> Any:
        """The Python value of ``attr``, or raise ValueError naming what was expected."""
        raise ValueError(self.syntax)

    def make(self, value: Any) -> ir.Attribute:
        raise ValueError(self.syntax)


class Bool(AttrKind):
    syntax = "a bool attribute (true/false)"

    def read(self, attr: ir.Attribute) -> bool:
        if not isinstance(attr, ir.BoolAttr):
            raise ValueError(self.syntax)
        return bool(attr.value)

    def make(self, value: Any) -> ir.Attribute:
        return ir.BoolAttr.get(bool(value))


class F32(AttrKind):
    syntax = "a 32-bit float attribute (e.g. 1.0 : f32)"

    def read(self, attr: ir.Attribute) -> float:
        if not isinstance(attr, ir.FloatAttr) or not isinstance(attr.type, ir.F32Type):
            raise ValueError(self.syntax)
        return float(attr.value)

    def make(self, value: Any) -> ir.Attribute:
        return ir.FloatAttr.get(ir.F32Type.get(), float(value))


class I64(AttrKind):
    syntax = "a 64-bit integer attribute (e.g. 4 : i64)"

    def read(self, attr: ir.Attribute) -> int:
        if not isinstance(attr, ir.IntegerAttr):
            raise ValueError(self.syntax)
        if str(attr.type) != "i64":
            raise ValueError(self.syntax)
        return int(attr.value)

    def make(self, value: Any) -> ir.Attribute:
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(value))


class Str(AttrKind):
    def __init__(self, choices: Sequence[str] | None = None) -> None:
        self.choices = tuple(choices) if choices else None
        self.syntax = (
            "one of the strings " + ", ".join(f'"{c}"' for c in self.choices)
            if self.choices
            else "a string attribute"
        )

    def read(self, attr: ir.Attribute) -> str:
        if not isinstance(attr, ir.StringAttr):
            raise ValueError(self.syntax)
        value = str(attr.value)
        if self.choices and value not in self.choices:
            raise ValueError(self.syntax)
        return value

    def make(self, value: Any) -> ir.Attribute:
        return ir.StringAttr.get(str(value))


class I64Array(AttrKind):
    def __init__(self, length: int | None = None) -> None:
        self.length = length
        n = f"{length} " if length is not None else ""
        self.syntax = f"a dense i64 array of {n}elements (e.g. array<i64: 64, 64, 16>)"

    def read(self, attr: ir.Attribute) -> tuple[int, ...]:
        if not isinstance(attr, ir.DenseI64ArrayAttr):
            raise ValueError(self.syntax)
        values = tuple(int(v) for v in attr)
        if self.length is not None and len(values) != self.length:
            raise ValueError(self.syntax)
        return values

    def make(self, value: Any) -> ir.Attribute:
        return ir.DenseI64ArrayAttr.get([int(v) for v in value])


# --------------------------------------------------------------------------- fields


class _Field:
    name: str = ""
    index: int = 0

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class Operand(_Field):
    def __init__(
        self, type_: TensorType | MemRefType | None, optional: bool, variadic: bool
    ) -> None:
        self.type = type_
        self.optional = optional
        self.variadic = variadic

    def __get__(self, instance: OpDef | None, owner: type) -> Any:
        if instance is None:
            return self
        operands = list(instance.op.operands)
        if self.variadic:
            return operands[self.index :]
        return operands[self.index] if self.index < len(operands) else None


class Result(_Field):
    def __init__(self, type_: TensorType | None, variadic: bool) -> None:
        self.type = type_
        self.variadic = variadic

    def __get__(self, instance: OpDef | None, owner: type) -> Any:
        if instance is None:
            return self
        results = list(instance.op.results)
        return results[self.index :] if self.variadic else results[self.index]


class Attr(_Field):
    def __init__(self, kind: AttrKind, default: Any, optional: bool, doc: str) -> None:
        self.kind = kind
        self.default = default
        self.optional = optional
        self.doc = doc

    @property
    def required(self) -> bool:
        return self.default is _MISSING and not self.optional

    def __get__(self, instance: OpDef | None, owner: type) -> Any:
        if instance is None:
            return self
        attributes = instance.op.attributes
        if self.name not in attributes:
            return None if self.default is _MISSING else self.default
        return self.kind.read(attributes[self.name])


def operand(
    type_: TensorType | MemRefType | None = None, optional: bool = False, variadic: bool = False
) -> Any:
    return Operand(type_, optional, variadic)


def result(type_: TensorType | None = None, variadic: bool = False) -> Any:
    return Result(type_, variadic)


def attr(kind: AttrKind, default: Any = _MISSING, optional: bool = False, doc: str = "") -> Any:
    return Attr(kind, default, optional, doc)


# --------------------------------------------------------------------------- op definitions


@dataclass(frozen=True)
class Traits:
    pure: bool = False
    has_region: bool = False
    terminator: bool = False


class OpDef:
    """A view of one ``ir.Operation`` through its schema (subclasses are the schemas)."""

    NAME: ClassVar[str]
    TRAITS: ClassVar[Traits]
    OPERANDS: ClassVar[tuple[Operand, ...]]
    RESULTS: ClassVar[tuple[Result, ...]]
    ATTRS: ClassVar[tuple[Attr, ...]]

    def __init__(self, op: ir.Operation | ir.OpView) -> None:
        self.op = op.operation

    def error(self, message: str) -> VerifyError:
        """An error at this op's location, prefixed with its name as MLIR's verifier does."""
        return VerifyError(f"'{self.NAME}' op {message}", source_location(self.op.location))

    def verify(self) -> None:
        """Op-specific checks, run after the generic ones; raise ``self.error(...)``."""

    # ----- generic verification

    def verify_schema(self) -> None:
        self._verify_operands()
        self._verify_results()
        self._verify_attributes()
        if self.TRAITS.has_region and len(self.op.regions) != 1:
            raise self.error(f"expects one region, found {len(self.op.regions)}")
        if not self.TRAITS.has_region and len(self.op.regions) != 0:
            raise self.error("does not take regions")

    def _verify_operands(self) -> None:
        operands = list(self.op.operands)
        fixed = [o for o in self.OPERANDS if not o.variadic]
        required = sum(1 for o in fixed if not o.optional)
        variadic = any(o.variadic for o in self.OPERANDS)
        if len(operands) < required or (not variadic and len(operands) > len(fixed)):
            expected = f"{required}" if required == len(fixed) else f"{required} to {len(fixed)}"
            if variadic:
                expected = f"at least {required}"
            names = ", ".join(o.name for o in self.OPERANDS)
            raise self.error(f"expects {expected} operands ({names}), found {len(operands)}")
        self._verify_types("operand", operands, self.OPERANDS)

    def _verify_results(self) -> None:
        results = list(self.op.results)
        variadic = any(r.variadic for r in self.RESULTS)
        if not variadic and len(results) != len(self.RESULTS):
            raise self.error(f"expects {len(self.RESULTS)} results, found {len(results)}")
        self._verify_types("result", results, self.RESULTS)

    def _verify_types(
        self, what: str, values: Sequence[ir.Value], fields: Sequence[Operand | Result]
    ) -> None:
        """Each value against its field's type; a variadic last field types every value past
        the fixed ones."""
        for i, value in enumerate(values):
            spec = fields[min(i, len(fields) - 1)]
            if spec.type is not None and not spec.type.check(value.type):
                raise self.error(
                    f"{what} #{i} ('{spec.name}') must be a {spec.type.describe()}, "
                    f"found {value.type}"
                )

    def _verify_attributes(self) -> None:
        present = dict(self.op.attributes.items())
        known = {a.name: a for a in self.ATTRS}
        for name in present:
            # Names with a dot are discardable attributes owned by some dialect; let them pass.
            if name not in known and "." not in name:
                expected = ", ".join(known) or "none"
                raise self.error(f"has unknown attribute '{name}' (expected: {expected})")
        for spec in self.ATTRS:
            if spec.name not in present:
                if spec.required:
                    raise self.error(f"requires attribute '{spec.name}': {spec.kind.syntax}")
                continue
            try:
                spec.kind.read(present[spec.name])
            except ValueError as problem:
                raise self.error(
                    f"attribute '{spec.name}' must be {problem}, found {present[spec.name]}"
                ) from None

    # ----- building

    @classmethod
    def build(
        cls: type[_Op],
        operands: Sequence[ir.Value],
        result_types: Sequence[ir.Type],
        loc: ir.Location,
        regions: int = 0,
        **attributes: Any,
    ) -> _Op:
        """Creates the op at the current insertion point; attributes in schema order."""
        known = {a.name: a for a in cls.ATTRS}
        built: dict[str, ir.Attribute] = {}
        for spec in cls.ATTRS:
            value = attributes.pop(spec.name, None)
            if value is None:
                continue
            built[spec.name] = value if isinstance(value, ir.Attribute) else spec.kind.make(value)
        if attributes:
            raise TypeError(f"{cls.NAME}: unknown attributes {sorted(attributes)}; known {known}")
        op = ir.Operation.create(
            cls.NAME,
            results=list(result_types),
            operands=list(operands),
            attributes=built,
            regions=regions,
            loc=loc,
        )
        return cls(op)


_Op = TypeVar("_Op", bound=OpDef)

SCHEMAS: dict[str, type[OpDef]] = {}


def op(name: str, pure: bool = False, has_region: bool = False, terminator: bool = False) -> Any:
    """Registers a schema class under its op name and fills in its field tables."""

    def register(cls: type[_Op]) -> type[_Op]:
        fields = [v for v in vars(cls).values() if isinstance(v, _Field)]
        operands = tuple(f for f in fields if isinstance(f, Operand))
        results = tuple(f for f in fields if isinstance(f, Result))
        for index, operand in enumerate(operands):
            operand.index = index
        for index, result in enumerate(results):
            result.index = index
        cls.NAME = name
        cls.TRAITS = Traits(pure, has_region, terminator)
        cls.OPERANDS = operands
        cls.RESULTS = results
        cls.ATTRS = tuple(f for f in fields if isinstance(f, Attr))
        if name in SCHEMAS:
            raise ValueError(f"op {name} is declared twice")
        SCHEMAS[name] = cls
        return cls

    return register


# --------------------------------------------------------------------------- shape helpers


def dims(value: ir.Value) -> list[int | None]:
    """The dims of a ranked tensor value, None for dynamic ones."""
    tensor_type = ir.ShapedType(value.type)
    return [
        None if tensor_type.is_dynamic_dim(i) else tensor_type.get_dim_size(i)
        for i in range(tensor_type.rank)
    ]


def element_type(value: ir.Value) -> str:
    return str(ir.ShapedType(value.type).element_type)


def same_dim(a: int | None, b: int | None) -> bool:
    """Two dims agree unless both are static and differ."""
    return a is None or b is None or a == b


def finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
