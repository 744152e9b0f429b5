"""Helpers shared by the artifact tests: small tensor-level entry functions and the path from
their text to a runtime plan and a lowered module."""

from __future__ import annotations

from typing import Any

from mlir import ir

import tessera.lowering.cpu.entry_abi  # noqa: F401  (registers tessera-cpu-entry-abi)
from tessera.context import make_context, parse_module
from tessera.lowering.cpu.entry_describe import describe_entry
from tessera.lowering.cpu.pipeline import lower
from tessera.pipeline import run_pipeline
from tessera.runtime import ProgramSpec

# y = x * w + 1, w broadcast over the batch.
AFFINE = """
func.func @forward(%x: tensor<?x4x{t}> {{tessera.input = "x"}},
                   %w: tensor<4x{t}> {{tessera.weight = "w"}})
    -> (tensor<?x4x{t}> {{tessera.output = "y"}}) {{
  %c0 = arith.constant 0 : index
  %b = tensor.dim %x, %c0 : tensor<?x4x{t}>
  %e = tensor.empty(%b) : tensor<?x4x{t}>
  %wb = linalg.broadcast ins(%w : tensor<4x{t}>) outs(%e : tensor<?x4x{t}>) dimensions = [0]
  %m = arith.mulf %x, %wb : tensor<?x4x{t}>
  %one = arith.constant 1.0 : {t}
  %e1 = tensor.empty(%b) : tensor<?x4x{t}>
  %ones = linalg.fill ins(%one : {t}) outs(%e1 : tensor<?x4x{t}>) -> tensor<?x4x{t}>
  %y = arith.addf %m, %ones : tensor<?x4x{t}>
  return %y : tensor<?x4x{t}>
}}
"""

# y = x @ w with a dynamic batch, accumulated in f32.
MATMUL = """
func.func @forward(%x: tensor<?x4xf32> {tessera.input = "x"},
                   %w: tensor<4x8xf32> {tessera.weight = "w"}) -> tensor<?x8xf32> {
  %c0 = arith.constant 0 : index
  %b = tensor.dim %x, %c0 : tensor<?x4xf32>
  %e = tensor.empty(%b) : tensor<?x8xf32>
  %zero = arith.constant 0.0 : f32
  %acc = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %y = linalg.matmul ins(%x, %w : tensor<?x4xf32>, tensor<4x8xf32>)
                     outs(%acc : tensor<?x8xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}
"""

# y[b, s, :] = 2 * table[ids[b, s], :], the front end's embedding form.
GATHER = """
#ids = affine_map<(b, s, d) -> (b, s)>
#out = affine_map<(b, s, d) -> (b, s, d)>
func.func @forward(%ids: tensor<?x?xi64> {tessera.input = "input_ids"},
                   %table: tensor<16x8xbf16> {tessera.weight = "embed"}) -> tensor<?x?x8xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %b = tensor.dim %ids, %c0 : tensor<?x?xi64>
  %s = tensor.dim %ids, %c1 : tensor<?x?xi64>
  %e = tensor.empty(%b, %s) : tensor<?x?x8xbf16>
  %y = linalg.generic {indexing_maps = [#ids, #out],
                       iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%ids : tensor<?x?xi64>) outs(%e : tensor<?x?x8xbf16>) {
  ^bb0(%id: i64, %o: bf16):
    %row = arith.index_cast %id : i64 to index
    %col = linalg.index 2 : index
    %v = tensor.extract %table[%row, %col] : tensor<16x8xbf16>
    %two = arith.constant 2.0 : bf16
    %r = arith.mulf %v, %two : bf16
    linalg.yield %r : bf16
  } -> tensor<?x?x8xbf16>
  return %y : tensor<?x?x8xbf16>
}
"""

# Writes into its input: the entry ABI must keep the caller's tensor unchanged.
OVERWRITE = """
func.func @forward(%x: tensor<?xf32> {tessera.input = "x"}) -> tensor<?xf32> {
  %c0 = arith.constant 0 : index
  %v = arith.constant 7.0 : f32
  %y = tensor.insert %v into %x[%c0] : tensor<?xf32>
  return %y : tensor<?xf32>
}
"""


def parse(text: str, context: ir.Context | None = None) -> ir.Module:
    return parse_module(text, context or make_context(), source_name="test.mlir")


def apply_entry_abi(module: ir.Module) -> ir.Module:
    run_pipeline(module, "builtin.module(tessera-cpu-entry-abi)")
    return module


def prepare(text: str, **describe: Any) -> tuple[ir.Module, ProgramSpec]:
    """``text`` rewritten by the entry ABI, described, then lowered to the LLVM dialect."""
    module = apply_entry_abi(parse(text))
    spec = describe_entry(module, **describe)
    lower(module)
    return module, spec
