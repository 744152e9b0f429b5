"""Shared by the tests of the norm, gated-MLP, projection and lookup fusions: parsing and
running passes, and a small torch interpreter for the high-level IR and the fused ops.

The interpreter evaluates the IR text itself (upstream ops as MLIR defines them, each op
rounding to its result type) and the tessera ops from their documented semantics
(dialects/*.py docstrings), so a numerical check compares the unfused chain with what the
fused op's operands and attributes say, without any lowering.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import seeds
import torch
from mlir import ir

from tessera.context import make_context, parse_module
from tessera.ir_walk import walk_ops
from tessera.pipeline import run_pipeline


class NoRule(Exception):
    """The test interpreter has no rule for an op it was asked to evaluate."""


DTYPES = {
    "f32": torch.float32,
    "bf16": torch.bfloat16,
    "f16": torch.float16,
    "f64": torch.float64,
    "i64": torch.int64,
    "i32": torch.int32,
}

# --------------------------------------------------------------------------- passes


def parse(text: str) -> ir.Module:
    return parse_module(text, make_context(), "test.mlir")


def run(text: str, pipeline: str) -> ir.Module:
    """Parses ``text`` and runs ``pipeline`` (e.g. "tessera-fuse-proj") on it."""
    module = parse(text)
    run_pipeline(module, f"builtin.module({pipeline})")
    return module


def ops_named(module: ir.Module, name: str) -> list[ir.Operation]:
    return [op for op in walk_ops(module.operation) if op.name == name]


def op_names(module: ir.Module) -> list[str]:
    return [op.name for op in walk_ops(module.operation)]


def only_op(module: ir.Module, name: str) -> ir.Operation:
    found = ops_named(module, name)
    assert len(found) == 1, f"expected one {name}, found {len(found)} in\n{module}"
    return found[0]


def first_op(module: ir.Module, name: str) -> ir.Operation:
    found = ops_named(module, name)
    assert found, f"no {name} in\n{module}"
    return found[0]


def attr_float(op: ir.Operation, name: str) -> float:
    return float(op.attributes[name].value)


def attr_str(op: ir.Operation, name: str) -> str:
    return str(op.attributes[name].value)


def block_arguments(module: ir.Module) -> list[ir.Value]:
    func = first_op(module, "func.func")
    return list(func.regions[0].blocks[0].arguments)


# --------------------------------------------------------------------------- interpreter


def _dtype(type_: ir.Type) -> torch.dtype:
    element = type_.element_type if isinstance(type_, ir.ShapedType) else type_
    return DTYPES[str(element)]


def _attr_ints(op: ir.Operation, name: str) -> list[int]:
    return [int(v) for v in op.attributes[name]]


def _scalar_constant(attr: ir.Attribute) -> float | int:
    if isinstance(attr, ir.FloatAttr):
        return float(attr.value)
    return int(attr.value)


def _constant(op: ir.Operation) -> torch.Tensor | float | int:
    attr = op.attributes["value"]
    if isinstance(attr, ir.FloatAttr | ir.IntegerAttr):
        return _scalar_constant(attr)
    type_ = op.results[0].type
    dims = [type_.get_dim_size(i) for i in range(type_.rank)]
    if attr.is_splat:
        return torch.full(dims, _scalar_constant(attr.get_splat_value()), dtype=_dtype(type_))
    count = math.prod(dims)
    values = [float(attr[i]) for i in range(count)]
    return torch.tensor(values, dtype=_dtype(type_)).reshape(dims)


_ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "arith.addf": torch.add,
    "arith.subf": torch.sub,
    "arith.mulf": torch.mul,
    "arith.divf": torch.div,
    "arith.maximumf": torch.maximum,
    "arith.minimumf": torch.minimum,
    "arith.negf": torch.neg,
    "math.tanh": torch.tanh,
    "math.exp": torch.exp,
    "math.erf": torch.erf,
    "math.sqrt": torch.sqrt,
    "math.rsqrt": torch.rsqrt,
    "math.absf": torch.abs,
    "math.log": torch.log,
    "math.powf": torch.pow,
    "math.cos": torch.cos,
    "math.sin": torch.sin,
}
_SCALAR: dict[str, Callable[..., float | int]] = {
    "arith.addf": lambda a, b: a + b,
    "arith.subf": lambda a, b: a - b,
    "arith.mulf": lambda a, b: a * b,
    "arith.divf": lambda a, b: a / b,
    "arith.addi": lambda a, b: a + b,
    "arith.muli": lambda a, b: a * b,
    "arith.index_cast": int,
}


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name == "silu":
        return torch.nn.functional.silu(x)
    raise KeyError(name)


class Interpreter:
    """Evaluates one func.func of a module on torch tensors."""

    def __init__(self) -> None:
        self.values: dict[ir.Value, object] = {}

    def __call__(self, module: ir.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        func = first_op(module, "func.func")
        block = func.regions[0].blocks[0]
        for argument, value in zip(block.arguments, inputs, strict=True):
            self.values[argument] = value
        return self.block(block)

    def block(self, block: ir.Block) -> list:
        for view in block.operations:
            op = view.operation
            if op.name in ("func.return", "tessera.yield", "linalg.yield"):
                return [self.values[v] for v in op.operands]
            results = self.op(op)
            for result, value in zip(op.results, results, strict=True):
                self.values[result] = value
        raise AssertionError("block without terminator")

    def get(self, value: ir.Value) -> object:
        return self.values[value]

    def op(self, op: ir.Operation) -> list:
        name = op.name
        args = [self.get(v) for v in op.operands]
        result_type = op.results[0].type if len(op.results) else None
        if name == "arith.constant":
            return [_constant(op)]
        if name == "tensor.dim":
            return [args[0].shape[args[1]]]
        if name in _ELEMENTWISE and isinstance(args[0], torch.Tensor):
            return [_ELEMENTWISE[name](*args).to(_dtype(result_type))]
        if name in _SCALAR:
            return [_SCALAR[name](*args)]
        if name in ("arith.extf", "arith.truncf", "arith.sitofp"):
            return [args[0].to(_dtype(result_type))]
        if name == "tensor.empty":
            return [torch.zeros(self.dims(result_type, args), dtype=_dtype(result_type))]
        if name == "linalg.fill":
            return [torch.full_like(args[1], args[0])]
        if name == "linalg.broadcast":
            source, init = args
            added = _attr_ints(op, "dimensions")
            view = source
            for dim in sorted(added):
                view = view.unsqueeze(dim)
            return [view.expand(init.shape).clone()]
        if name == "tensor.collapse_shape":
            groups = [[int(i) for i in g] for g in op.attributes["reassociation"]]
            sizes = [math.prod(args[0].shape[i] for i in group) for group in groups]
            return [args[0].reshape(sizes)]
        if name == "tensor.expand_shape":
            return [args[0].reshape(self.dims(result_type, args[1:]))]
        if name == "linalg.reduce":
            return [self.reduce(op, args)]
        if name == "linalg.matmul":
            return [self.matmul(op, args)]
        if name == "linalg.generic":
            return [self.generic(op, args)]
        if name == "tessera.region":
            inner = Interpreter()
            inner.values = dict(self.values)
            block = op.regions[0].blocks[0]
            for argument, value in zip(block.arguments, args, strict=True):
                inner.values[argument] = value
            return inner.block(block)
        if name.startswith("tessera."):
            return [tessera_op(op, args)]
        raise NoRule(f"interpreter: {name}")

    def dims(self, type_: ir.RankedTensorType, dynamic: list) -> list[int]:
        sizes = iter(dynamic)
        return [
            int(next(sizes)) if type_.is_dynamic_dim(i) else type_.get_dim_size(i)
            for i in range(type_.rank)
        ]

    def reduce(self, op: ir.Operation, args: list) -> torch.Tensor:
        source, init = args
        dims = _attr_ints(op, "dimensions")
        body = [o.operation.name for o in op.regions[0].blocks[0].operations]
        if body[0] == "arith.addf":
            return (init + source.sum(dim=dims)).to(init.dtype)
        if body[0] == "arith.maximumf":
            return torch.maximum(init, source.amax(dim=dims))
        raise NoRule(f"reduce with {body}")

    def matmul(self, op: ir.Operation, args: list) -> torch.Tensor:
        a, b, acc = args
        # Without indexing maps a linalg.matmul is a[m, k]·b[k, n].
        if "indexing_maps" in op.attributes:
            maps = [str(m).replace(" ", "") for m in op.attributes["indexing_maps"]]
            if maps[1].endswith("->(d1,d2)>"):
                b = b.t()
        product = a.to(torch.float64) @ b.to(torch.float64)
        return (acc.to(torch.float64) + product).to(acc.dtype)

    def generic(self, op: ir.Operation, args: list) -> torch.Tensor:
        """Element by element (tests use tiny shapes); inputs read through their maps."""
        segments = [int(s) for s in op.attributes["operandSegmentSizes"]]
        inputs, (init,) = args[: segments[0]], args[segments[0] :]
        maps = [m.value for m in op.attributes["indexing_maps"]]
        body = op.regions[0].blocks[0]
        out = init.clone()
        for index in _indices(init.shape):
            scalar = _ScalarInterpreter(self.values, index)
            for argument, tensor, affine_map in zip(body.arguments, inputs, maps, strict=False):
                position = tuple(index[r.position] for r in affine_map.results)
                scalar.values[argument] = tensor[position].item()
            out[index] = scalar.run(body)
        return out


def _indices(shape: Sequence[int]) -> list[tuple[int, ...]]:
    found: list[tuple[int, ...]] = [()]
    for size in shape:
        found = [(*prefix, i) for prefix in found for i in range(size)]
    return found


class _ScalarInterpreter:
    """The body of a linalg.generic at one index."""

    def __init__(self, outer: dict, index: tuple[int, ...]) -> None:
        self.values = dict(outer)
        self.index = index

    def run(self, body: ir.Block) -> float | int:
        for view in body.operations:
            op = view.operation
            args = [self.values[v] for v in op.operands]
            if op.name == "linalg.yield":
                return args[0]
            if op.name == "linalg.index":
                value = self.index[int(op.attributes["dim"].value)]
            elif op.name == "tensor.extract":
                value = args[0][tuple(int(i) for i in args[1:])].item()
            elif op.name in _SCALAR:
                value = _SCALAR[op.name](*args)
            else:
                raise NoRule(f"generic body: {op.name}")
            self.values[op.results[0]] = value
        raise AssertionError("generic body without yield")


def tessera_op(op: ir.Operation, args: list) -> torch.Tensor:
    """A tessera op from its documented semantics, computed in float64 and rounded once to
    the result type (the dialect's ops compute in f32 or wider)."""
    out_dtype = _dtype(op.results[0].type)
    wide = [a.to(torch.float64) if a.is_floating_point() else a for a in args]
    attributes = dict(op.attributes.items())

    def number(name: str, default: float) -> float:
        return float(attributes[name].value) if name in attributes else default

    if op.name == "tessera.norm.rms":
        x, w = wide
        scale = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + number("eps", math.nan))
        return (x * scale * (number("offset", 1.0) + w)).to(out_dtype)
    if op.name == "tessera.mma.proj":
        x, w, *bias = wide
        transpose = "transpose_w" in attributes and bool(attributes["transpose_w"].value)
        y = x @ (w.t() if transpose else w)
        if bias:
            y = y + bias[0]
        if "softcap" in attributes:
            cap = number("softcap", math.nan)
            y = cap * torch.tanh(y / cap)
        return y.to(out_dtype)
    if op.name == "tessera.mlp.swi_glu":
        x, w_gate, w_up, w_down = wide
        hidden = _activation(attr_str(op, "activation"), x @ w_gate.t()) * (x @ w_up.t())
        return (hidden @ w_down.t()).to(out_dtype)
    if op.name == "tessera.tensor.lookup":
        table, ids = wide
        return (table[ids] * number("scale", 1.0)).to(out_dtype)
    raise NoRule(f"interpreter: {op.name}")


def evaluate(module: ir.Module, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    (result,) = Interpreter()(module, inputs)
    return result


def assert_fusion_preserves(
    text: str, pipeline: str, inputs: Sequence[torch.Tensor], rtol: float
) -> ir.Module:
    """Runs ``pipeline`` on ``text`` and checks that the fused module computes what the
    unfused one does (relative error in the 2-norm against the unfused result)."""
    expected = evaluate(parse(text), inputs).to(torch.float64)
    fused = run(text, pipeline)
    found = evaluate(fused, inputs).to(torch.float64)
    assert found.shape == expected.shape
    error = (found - expected).norm() / expected.norm()
    assert error <= rtol, f"relative error {error:.3g} > {rtol:g}\n{fused}"
    return fused


# --------------------------------------------------------------------------- IR text helpers

MATMUL_MAPS = (
    "indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, "
    "affine_map<(m, n, k) -> (m, n)>]"
)


def tensor(dims: Sequence[int | None], dtype: str) -> str:
    return "tensor<" + "".join(("?" if d is None else str(d)) + "x" for d in dims) + dtype + ">"


def float_literal(number: float) -> str:
    """A float as MLIR reads it (always with a mantissa point), exact for a double."""
    return f"{float(number):.17e}"


Dim = int | str  # a static size, or a symbol ("B", "S") for a dynamic one


@dataclass(frozen=True)
class Val:
    name: str
    dims: tuple[Dim, ...]
    dtype: str

    @property
    def type(self) -> str:
        return tensor([d if isinstance(d, int) else None for d in self.dims], self.dtype)


class Builder:
    """Writes one func.func in the high-level form of docs/high-level-ir.md, an op per call.

    Dynamic sizes are symbols; their index values come from ``tensor.dim`` of the first
    argument that has them, products ("B*S") from ``arith.muli``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.arguments: list[tuple[Val, str]] = []
        self.lines: list[str] = []
        self.sizes: dict[str, str] = {}
        self.count = 0

    def fresh(self, hint: str = "v") -> str:
        self.count += 1
        return f"%{hint}{self.count}"

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def arg(self, name: str, dims: Sequence[Dim], dtype: str, attributes: str = "") -> Val:
        value = Val(f"%{name}", tuple(dims), dtype)
        self.arguments.append((value, attributes))
        for axis, dim in enumerate(dims):
            if isinstance(dim, str) and dim not in self.sizes:
                index = self.fresh("c")
                self.emit(f"{index} = arith.constant {axis} : index")
                self.sizes[dim] = self.fresh(dim)
                self.emit(f"{self.sizes[dim]} = tensor.dim {value.name}, {index} : {value.type}")
        return value

    def size(self, symbol: str) -> str:
        if symbol in self.sizes:
            return self.sizes[symbol]
        if symbol.isdigit():
            self.sizes[symbol] = self.fresh("c")
            self.emit(f"{self.sizes[symbol]} = arith.constant {symbol} : index")
            return self.sizes[symbol]
        parts = symbol.split("*")
        product = self.size(parts[0])
        for part in parts[1:]:
            name = self.fresh("n")
            self.emit(f"{name} = arith.muli {product}, {self.size(part)} : index")
            product = name
        self.sizes[symbol] = product
        return product

    def empty(self, dims: Sequence[Dim], dtype: str) -> Val:
        dynamic = ", ".join(self.size(d) for d in dims if isinstance(d, str))
        value = Val(self.fresh("e"), tuple(dims), dtype)
        self.emit(f"{value.name} = tensor.empty({dynamic}) : {value.type}")
        return value

    def scalar(self, number: float, dtype: str) -> str:
        name = self.fresh("s")
        literal = float_literal(number) if dtype.startswith(("f", "b")) else str(number)
        self.emit(f"{name} = arith.constant {literal} : {dtype}")
        return name

    def splat(self, number: float, dims: Sequence[Dim], dtype: str, dense: bool = False) -> Val:
        """A tensor holding ``number``: a fill, or (static shapes) a dense constant."""
        if dense:
            value = Val(self.fresh("k"), tuple(dims), dtype)
            self.emit(
                f"{value.name} = arith.constant dense<{float_literal(number)}> : {value.type}"
            )
            return value
        init = self.empty(dims, dtype)
        scalar = self.scalar(number, dtype)
        value = Val(self.fresh("f"), tuple(dims), dtype)
        self.emit(
            f"{value.name} = linalg.fill ins({scalar} : {dtype}) outs({init.name} : {init.type})"
            f" -> {value.type}"
        )
        return value

    def op(self, name: str, *operands: Val, dtype: str | None = None) -> Val:
        """An elementwise arith/math op (a cast when ``dtype`` differs)."""
        first = operands[0]
        value = Val(self.fresh(), first.dims, dtype or first.dtype)
        names = ", ".join(o.name for o in operands)
        if value.dtype != first.dtype:
            self.emit(f"{value.name} = {name} {names} : {first.type} to {value.type}")
        else:
            self.emit(f"{value.name} = {name} {names} : {value.type}")
        return value

    def broadcast(self, source: Val, dims: Sequence[Dim], dimensions: Sequence[int]) -> Val:
        init = self.empty(dims, source.dtype)
        value = Val(self.fresh("b"), tuple(dims), source.dtype)
        self.emit(
            f"{value.name} = linalg.broadcast ins({source.name} : {source.type}) "
            f"outs({init.name} : {init.type}) dimensions = {list(dimensions)}"
        )
        return value

    def collapse(self, source: Val, groups: Sequence[Sequence[int]]) -> Val:
        dims = []
        for group in groups:
            members = [source.dims[i] for i in group]
            if all(isinstance(d, int) for d in members):
                dims.append(math.prod(members))
            else:
                dims.append("*".join(str(d) for d in members if d != 1))
        value = Val(self.fresh("r"), tuple(dims), source.dtype)
        self.emit(
            f"{value.name} = tensor.collapse_shape {source.name} {[list(g) for g in groups]} : "
            f"{source.type} into {value.type}"
        )
        return value

    def expand(self, source: Val, groups: Sequence[Sequence[int]], dims: Sequence[Dim]) -> Val:
        value = Val(self.fresh("r"), tuple(dims), source.dtype)
        shape_ = ", ".join(self.size(d) if isinstance(d, str) else str(d) for d in dims)
        self.emit(
            f"{value.name} = tensor.expand_shape {source.name} {[list(g) for g in groups]} "
            f"output_shape [{shape_}] : {source.type} into {value.type}"
        )
        return value

    def reduce_sum(self, source: Val, axis: int, init_value: float = 0.0) -> Val:
        dims = [d for i, d in enumerate(source.dims) if i != axis]
        init = self.splat(init_value, dims, source.dtype)
        value = Val(self.fresh("sum"), tuple(dims), source.dtype)
        t = source.dtype
        self.emit(
            f"{value.name} = linalg.reduce ins({source.name} : {source.type}) "
            f"outs({init.name} : {init.type}) dimensions = [{axis}]\n"
            f"    (%a: {t}, %b: {t}) {{\n      %s = arith.addf %a, %b : {t}\n"
            f"      linalg.yield %s : {t}\n    }}"
        )
        return value

    def matmul_t(self, a: Val, b: Val, init_value: float = 0.0, acc: str = "f32") -> Val:
        """a [M, K] · b [N, K]ᵀ into an accumulator filled with ``init_value``."""
        dims = (a.dims[0], b.dims[0])
        init = self.splat(init_value, dims, acc)
        value = Val(self.fresh("mm"), dims, acc)
        self.emit(
            f"{value.name} = linalg.matmul {MATMUL_MAPS} ins({a.name}, {b.name} : {a.type}, "
            f"{b.type}) outs({init.name} : {init.type}) -> {value.type}"
        )
        return value

    def linear(self, x: Val, w: Val, out_dtype: str | None = None) -> Val:
        """torch Linear without bias: collapse, matmul, truncf back to x's dtype, expand."""
        rank = len(x.dims)
        groups = [list(range(rank - 1)), [rank - 1]]
        flat = self.collapse(x, groups) if rank > 2 else x
        y = self.matmul_t(flat, w)
        dtype = out_dtype or x.dtype
        if dtype != "f32":
            y = self.op("arith.truncf", y, dtype=dtype)
        if rank > 2:
            y = self.expand(y, groups, (*x.dims[:-1], w.dims[0]))
        return y

    def gather(self, table: Val, ids: Val, column_dim: int | None = None) -> Val:
        """The embedding gather: a linalg.generic over ids extracting table[id, column]."""
        rank = len(ids.dims) + 1
        column = rank - 1 if column_dim is None else column_dim
        dims = (*ids.dims, table.dims[1])
        init = self.empty(dims, table.dtype)
        value = Val(self.fresh("g"), dims, table.dtype)
        loops = ", ".join(f"d{i}" for i in range(rank))
        id_map = f"affine_map<({loops}) -> ({', '.join(f'd{i}' for i in range(rank - 1))})>"
        out_map = f"affine_map<({loops}) -> ({loops})>"
        iterators = ", ".join(['"parallel"'] * rank)
        self.emit(
            f"{value.name} = linalg.generic {{indexing_maps = [{id_map}, {out_map}], "
            f"iterator_types = [{iterators}]}} ins({ids.name} : {ids.type}) "
            f"outs({init.name} : {init.type}) {{"
        )
        self.emit(f"^bb0(%id: {ids.dtype}, %out: {table.dtype}):")
        self.emit(f"  %row = arith.index_cast %id : {ids.dtype} to index")
        self.emit(f"  %col = linalg.index {column} : index")
        self.emit(f"  %elem = tensor.extract {table.name}[%row, %col] : {table.type}")
        self.emit(f"  linalg.yield %elem : {table.dtype}")
        self.emit(f"}} -> {value.type}")
        return value

    def text(self, *results: Val) -> str:
        parameters = ", ".join(f"{v.name}: {v.type}{a}" for v, a in self.arguments)
        types = ", ".join(r.type for r in results)
        names = ", ".join(r.name for r in results)
        body = "\n".join(self.lines)
        return (
            f"func.func @{self.name}({parameters}) -> ({types}) {{\n{body}\n"
            f"  return {names} : {types}\n}}\n"
        )


def random_inputs(text: str, sizes: Sequence[int] = (2, 3)) -> list[torch.Tensor]:
    """Random arguments for the function in ``text``, drawn from the test's seed: dynamic dims
    take ``sizes`` in order, integer arguments are ids below 5."""
    generator = seeds.generator()
    module = parse(text)
    inputs = []
    for argument in block_arguments(module):
        type_ = argument.type
        dynamic = iter(sizes)
        dims = [
            next(dynamic) if type_.is_dynamic_dim(i) else type_.get_dim_size(i)
            for i in range(type_.rank)
        ]
        dtype = _dtype(type_)
        if dtype.is_floating_point:
            inputs.append(torch.randn(dims, generator=generator).to(dtype))
        else:
            inputs.append(torch.randint(0, 5, dims, generator=generator).to(dtype))
    return inputs


# --------------------------------------------------------------------------- own checks


def test_interpreter_reproduces_a_torch_linear_with_bias() -> None:
    b = Builder("linear")
    x = b.arg("x", ["B", 3, 8], "f32")
    w = b.arg("w", [5, 8], "f32")
    bias = b.arg("bias", [5], "f32")
    y = b.linear(x, w)
    out = b.op("arith.addf", y, b.broadcast(bias, y.dims, [0, 1]))
    inputs = random_inputs(b.text(out))
    found = evaluate(parse(b.text(out)), inputs)
    torch.testing.assert_close(found, torch.nn.functional.linear(*inputs))


def test_interpreter_reproduces_an_embedding_gather() -> None:
    b = Builder("gather")
    ids = b.arg("ids", [2, 3], "i64")
    table = b.arg("table", [7, 4], "f32")
    text = b.text(b.gather(table, ids))
    ids_value = torch.tensor([[0, 6, 2], [3, 3, 1]])
    table_value = torch.randn(7, 4)
    found = evaluate(parse(text), [ids_value, table_value])
    torch.testing.assert_close(found, table_value[ids_value])


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_interpreter_rounds_every_op_to_its_type(dtype: str) -> None:
    b = Builder("f")
    x = b.arg("x", [4], dtype)
    three = b.splat(3.0, [4], dtype, dense=True)
    text = b.text(b.op("arith.mulf", b.op("arith.divf", x, three), three))
    x_value = torch.tensor([1.0, 2.0, 5.0, 7.0], dtype=DTYPES[dtype])
    expected = (x_value / 3.0).to(DTYPES[dtype]) * 3.0
    torch.testing.assert_close(evaluate(parse(text), [x_value]), expected.to(DTYPES[dtype]))
