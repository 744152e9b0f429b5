"""The one way IR text is written (``tessera.mlir_text``, ``tessera.mlir_writer``): literals
that MLIR reads back as the same number in every float type, types, and a check that no
other module grows its own copy of these helpers."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import seeds
import torch
from mlir import ir

from tessera.context import make_context
from tessera.ir_types import element_type, ranked_tensor_type, shaped_dims
from tessera.mlir_text import float_literal, memref_type, quote, scalar_literal, tensor_type
from tessera.mlir_writer import BodyWriter

ROOT = Path(__file__).resolve().parents[2]
FLOATS = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
EDGES = [0.0, -0.0, 1.0, -2.5, 1e-06, 1e-05, 1e16, 3.4e38, 5e-324, 1e-45, 65504.0, 1 / 3]
SPECIAL = [math.inf, -math.inf, math.nan]


def read_back(literal: str, element: str) -> float:
    """The value MLIR gives ``arith.constant <literal> : <element>``."""
    with make_context():
        module = ir.Module.parse(
            f"func.func @f() -> {element} {{\n"
            f"  %c = arith.constant {literal} : {element}\n  return %c : {element}\n}}"
        )
        constant = module.body.operations[0].regions[0].blocks[0].operations[0]
        return float(ir.FloatAttr(constant.attributes["value"]).value)


def rounded(value: float, element: str) -> float:
    """``value`` rounded to ``element`` as torch rounds it (to nearest even)."""
    return float(torch.tensor(value, dtype=torch.float64).to(FLOATS[element]).double())


@pytest.mark.parametrize("element", list(FLOATS))
def test_float_literals_read_back_as_the_rounded_value(element: str) -> None:
    generator = seeds.generator()
    values = EDGES + (torch.randn(64, generator=generator, dtype=torch.float64) * 1e3).tolist()
    values += torch.exp(torch.randn(32, generator=generator, dtype=torch.float64) * 40).tolist()
    for value in values:
        expected = rounded(value, element)
        if math.isinf(expected):
            continue  # beyond the type's range: not a value of it
        literal = float_literal(value, element)
        assert "." in literal or "0x" in literal, literal  # MLIR reads `1e-06` as an integer
        found = read_back(literal, element)
        assert found == expected or (found == 0 and expected == 0), (value, literal, found)


@pytest.mark.parametrize("element", list(FLOATS))
def test_infinities_and_nan_are_bit_patterns(element: str) -> None:
    for value in SPECIAL:
        literal = float_literal(value, element)
        assert literal.startswith("0x")
        found = read_back(literal, element)
        if math.isnan(value):
            assert math.isnan(found)
        else:
            assert found == value


def test_scalars_and_types() -> None:
    assert scalar_literal(True, "i1") == "true" and scalar_literal(0, "i1") == "false"
    assert scalar_literal(7.0, "i64") == "7"
    assert scalar_literal(2, "f32") == "2.0"
    assert tensor_type([4, None, "s0"], "bf16") == "tensor<4x?x?xbf16>"
    assert tensor_type([], "f32") == "tensor<f32>"
    assert memref_type([None, 3], "i1") == "memref<?x3xi1>"
    assert quote('a "b"\\\n') == '"a \\"b\\"\\\\\\0A"'
    with pytest.raises(ValueError):
        float_literal(math.inf, "i32")


def test_shaped_types_read_and_make() -> None:
    with make_context(), ir.Location.unknown():
        made = ranked_tensor_type([2, None], ir.BF16Type.get())
        assert str(made) == "tensor<2x?xbf16>"
        assert shaped_dims(made) == [2, None] and element_type(made) == "bf16"
        assert shaped_dims(ir.F32Type.get()) == [] and element_type(ir.F32Type.get()) == "f32"
        assert shaped_dims(ir.Type.parse("memref<3x?xi8>")) == [3, None]


def test_the_writer_names_hoists_and_assembles() -> None:
    w = BodyWriter()
    one = w.constant("1", "index")
    assert w.constant("1", "index") == one  # hoisted once
    loop = w.fresh("iv")
    w.line(f"scf.for {loop} = {one} to {one} step {one} {{")
    w.depth += 1
    w.assign("arith.addi %a, %a : index", "i")
    w.depth -= 1
    w.line("}")
    w.line("return")
    text = w.function("f", [("%a", "index")], private=False)
    assert text.splitlines()[0] == "func.func @f(%a: index) {"
    assert text.index(f"{one} = arith.constant 1 : index") < text.index("scf.for")
    with make_context():
        ir.Module.parse(text)  # the text is valid IR


# Helpers that exist once, in tessera_ir/mlir_text.py, mlir_writer.py and ir_types.py.
SHARED = {
    "float_literal": "tessera_ir/mlir_text.py",
    "scalar_literal": "tessera_ir/mlir_text.py",
    "tensor_type": "tessera_ir/mlir_text.py",
    "memref_type": "tessera_ir/mlir_text.py",
    "quote": "tessera_ir/mlir_text.py",
    "fresh": "tessera_ir/mlir_writer.py",
    "hoist": "tessera_ir/mlir_writer.py",
    "shaped_dims": "tessera_ir/ir_types.py",
    "ranked_tensor_type": "tessera_ir/ir_types.py",
}
FOLDERS = ("tessera_ir", "dialects", "passes", "lowering")


def test_each_text_helper_is_defined_once() -> None:
    """A second ``float_literal`` (or tensor-type writer, or SSA namer) is how literals came
    to be written three ways; every module uses these instead."""
    where: dict[str, list[str]] = {name: [] for name in SHARED}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef) and node.name in where:
                    where[node.name].append(str(path.relative_to(ROOT)))
    assert {name: places for name, places in where.items() if places != [SHARED[name]]} == {}
