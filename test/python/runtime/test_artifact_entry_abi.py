"""tessera-cpu-entry-abi (results become caller-owned buffers) and describe_entry (the plan
the runtime follows: names, symbolic shapes, index ranges)."""

from __future__ import annotations

import re

import pytest
from test_artifact_support import AFFINE, GATHER, MATMUL, apply_entry_abi, parse

from tessera import LoweringError, PassError
from tessera.lowering.cpu.entry_describe import describe_entry, packed_symbol
from tessera.lowering.cpu.pipeline import TO_LLVM, lower
from tessera.pipeline import run_pipeline


def _signature(text: str) -> str:
    return next(line for line in text.splitlines() if "func.func @forward" in line)


def test_results_become_trailing_output_buffers() -> None:
    text = str(apply_entry_abi(parse(AFFINE.format(t="f32"))))
    signature = _signature(text)
    assert re.search(r"%arg2: memref<\?x4xf32> \{tessera.output = \"y\"\}\)", signature)
    assert "->" not in signature  # returns nothing
    assert "attributes {llvm.emit_c_interface}" in signature
    # The caller's tensors are read-only for bufferization.
    assert signature.count("bufferization.writable = false") == 2
    assert re.search(
        r"bufferization.materialize_in_destination %\w+ in restrict writable %arg2 "
        r": \(tensor<\?x4xf32>, memref<\?x4xf32>\) -> \(\)\n\s+return\n",
        text,
    )


def test_a_dynamic_dim_is_checked_against_the_buffer() -> None:
    text = str(apply_entry_abi(parse(MATMUL)))
    assert text.count("cf.assert") == 1
    assert "output 'output0' of @forward: dim 0" in text
    static = """
func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.addf %x, %x : tensor<4xf32>
  return %y : tensor<4xf32>
}
"""
    assert "cf.assert" not in str(apply_entry_abi(parse(static)))


def test_every_return_writes_the_buffers() -> None:
    text = """
func.func @forward(%c: i1, %x: tensor<4xf32>, %y: tensor<4xf32>) -> tensor<4xf32> {
  cf.cond_br %c, ^a, ^b
^a:
  return %x : tensor<4xf32>
^b:
  return %y : tensor<4xf32>
}
"""
    rewritten = str(apply_entry_abi(parse(text)))
    assert rewritten.count("materialize_in_destination") == 2
    assert rewritten.count("return\n") == 2
    # A non-tensor argument is passed as is, without a writable attribute.
    assert "%arg0: i1," in _signature(rewritten)


def test_private_and_rewritten_functions_are_left_alone() -> None:
    text = """
module {
  func.func private @helper(%x: tensor<4xf32>) -> tensor<4xf32> {
    return %x : tensor<4xf32>
  }
  func.func @done(%x: tensor<4xf32>, %out: memref<4xf32>) {
    bufferization.materialize_in_destination %x in restrict writable %out
        : (tensor<4xf32>, memref<4xf32>) -> ()
    return
  }
}
"""
    before = str(parse(text))
    assert str(apply_entry_abi(parse(text))) == before
    once = str(apply_entry_abi(parse(MATMUL)))
    assert str(apply_entry_abi(parse(once))) == once


def test_non_tensor_result_is_an_error_at_the_function() -> None:
    text = """
func.func @forward(%x: tensor<?xf32>) -> index {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?xf32>
  return %n : index
}
"""
    with pytest.raises(PassError, match="returns index \\(result #0\\); the cpu entry ABI") as e:
        apply_entry_abi(parse(text))
    assert str(e.value).startswith("test.mlir:2:1: error:")


def test_called_entry_is_an_error() -> None:
    text = """
module {
  func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
    return %x : tensor<4xf32>
  }
  func.func @caller(%x: tensor<4xf32>) -> tensor<4xf32> {
    %y = func.call @forward(%x) : (tensor<4xf32>) -> tensor<4xf32>
    return %y : tensor<4xf32>
  }
}
"""
    with pytest.raises(PassError, match=r"@forward is referenced by 'func\.call'"):
        apply_entry_abi(parse(text))


def test_output_is_written_into_the_callers_buffer() -> None:
    module = apply_entry_abi(parse(AFFINE.format(t="f32")))
    # The CPU pipeline up to and including bufferization.
    upto = next(i for i, p in enumerate(TO_LLVM) if p.startswith("one-shot-bufferize"))
    run_pipeline(module, "builtin.module(" + ",".join(TO_LLVM[: upto + 1]) + ")", verify_each=False)
    text = str(module)
    assert "materialize_in_destination" not in text
    assert re.search(r"memref.copy %\w+, %arg2 : memref<\?x4xf32> to memref<\?x4xf32>", text)
    lower(module)
    assert "llvm.func @_mlir_ciface_forward(" in str(module)


# --------------------------------------------------------------------------- describe_entry


def test_describe_names_arguments_in_abi_order() -> None:
    module = apply_entry_abi(parse(AFFINE.format(t="bf16")))
    spec = describe_entry(module, dims={"x": ["B", 4]}, bounds={"B": (1, 64)})
    assert spec.name == "prefill"
    assert [(s.name, s.min, s.max) for s in spec.symbols] == [("B", 1, 64)]
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("x", "bf16", ("B", 4))]
    assert [(t.name, t.dtype, t.shape) for t in spec.weights] == [("w", "bf16", (4,))]
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("y", "bf16", ("B", 4))]
    (step,) = spec.steps
    assert step.symbol == packed_symbol("forward") == "_mlir__mlir_ciface_forward"
    assert [(a.kind, a.name) for a in step.args] == [
        ("input", "x"),
        ("weight", "w"),
        ("output", "y"),
    ]


def test_output_dims_are_derived_from_input_dims() -> None:
    spec = describe_entry(apply_entry_abi(parse(MATMUL)))
    assert spec.inputs[0].shape == ("x.0", 4)
    assert spec.outputs[0].shape == ("x.0", 8)
    gather = describe_entry(apply_entry_abi(parse(GATHER)), dims={"input_ids": ["B", "S"]})
    assert gather.outputs[0].shape == ("B", "S", 8)


def test_dims_attribute_names_dims() -> None:
    text = MATMUL.replace('{tessera.input = "x"}', '{tessera.input = "x", tessera.dims = ["N", 4]}')
    spec = describe_entry(apply_entry_abi(parse(text)))
    assert spec.outputs[0].shape == ("N", 8)


def test_underivable_output_dim_asks_for_explicit_dims() -> None:
    text = """
func.func @forward(%x: tensor<?xf32>) -> tensor<?xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = tensor.dim %x, %c0 : tensor<?xf32>
  %m = arith.addi %n, %c1 : index
  %e = tensor.empty(%m) : tensor<?xf32>
  %z = arith.constant 0.0 : f32
  %y = linalg.fill ins(%z : f32) outs(%e : tensor<?xf32>) -> tensor<?xf32>
  return %y : tensor<?xf32>
}
"""
    module = apply_entry_abi(parse(text))
    with pytest.raises(LoweringError, match="dim 0 of output 'output0' of @forward is computed by"):
        describe_entry(module)


BAD_DIMS = {
    "wrong rank": ({"x": ["B"]}, "dims ['B'] of input 'x' of @forward have 1 entries"),
    "static dim renamed": ({"x": ["B", "K"]}, "dim 1 of input 'x' of @forward is 4 in its type"),
    "unknown name": ({"ids": ["B", 4]}, "dims names ids, which are not inputs or outputs"),
    "output symbol from nowhere": (
        {"x": ["B", 4], "output0": ["M", 8]},
        "symbol 'M' is not declared",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DIMS))
def test_bad_dims_are_reported(case: str) -> None:
    dims, message = BAD_DIMS[case]
    module = apply_entry_abi(parse(MATMUL))
    with pytest.raises(LoweringError) as raised:
        describe_entry(module, dims=dims)
    assert message in str(raised.value)


def test_bounds_must_name_symbols() -> None:
    module = apply_entry_abi(parse(MATMUL))
    with pytest.raises(LoweringError, match="bounds name S, which are not symbols"):
        describe_entry(module, dims={"x": ["B", 4]}, bounds={"S": (1, 8)})


def test_token_ids_get_the_table_size_as_range() -> None:
    spec = describe_entry(apply_entry_abi(parse(GATHER)))
    assert spec.inputs[0].range == (0, 16)
    explicit = describe_entry(apply_entry_abi(parse(GATHER)), ranges={"input_ids": (0, 10)})
    assert explicit.inputs[0].range == (0, 10)


def test_range_follows_ids_through_a_transpose() -> None:
    transposed = GATHER.replace(
        "  %e = tensor.empty(%b, %s)",
        "  %et = tensor.empty(%s, %b) : tensor<?x?xi64>\n"
        "  %t = linalg.transpose ins(%ids : tensor<?x?xi64>) outs(%et : tensor<?x?xi64>)"
        " permutation = [1, 0]\n"
        "  %e = tensor.empty(%s, %b)",
    ).replace("ins(%ids : tensor<?x?xi64>) outs(%e :", "ins(%t : tensor<?x?xi64>) outs(%e :")
    spec = describe_entry(apply_entry_abi(parse(transposed)), dims={"input_ids": ["B", "S"]})
    assert spec.inputs[0].range == (0, 16)
    assert spec.outputs[0].shape == ("S", "B", 8)


def test_lookup_op_ids_get_the_table_rows_as_range() -> None:
    text = """
func.func @forward(%ids: tensor<?x?xi32> {tessera.input = "input_ids"},
                   %t: tensor<32x8xf32> {tessera.weight = "embed"}) -> tensor<?x?x8xf32> {
  %c = tensor.collapse_shape %ids [[0, 1]] : tensor<?x?xi32> into tensor<?xi32>
  %y = "tessera.tensor.lookup"(%t, %c) {scale = 1.0 : f32}
      : (tensor<32x8xf32>, tensor<?xi32>) -> tensor<?x8xf32>
  %e = tensor.expand_shape %y [[0, 1], [2]] output_shape [1, 4, 8]
      : tensor<?x8xf32> into tensor<?x?x8xf32>
  return %e : tensor<?x?x8xf32>
}
"""
    module = apply_entry_abi(parse(text))
    spec = describe_entry(module, dims={"input_ids": ["B", "S"], "output0": ["B", "S", 8]})
    assert spec.inputs[0].range == (0, 32)


def test_computed_index_needs_an_explicit_range() -> None:
    shifted = GATHER.replace(
        "%row = arith.index_cast %id : i64 to index",
        "%one = arith.constant 1 : i64\n    %next = arith.addi %id, %one : i64\n"
        "    %row = arith.index_cast %next : i64 to index",
    )
    module = apply_entry_abi(parse(shifted))
    with pytest.raises(LoweringError) as raised:
        describe_entry(module)
    message = str(raised.value)
    assert (
        "input 'input_ids' of @forward indexes memory through 'tensor.extract' at test.mlir:"
        in (message)
    )
    assert "ranges={'input_ids': (low, high)}" in message
    assert describe_entry(module, ranges={"input_ids": (-1, 15)}).inputs[0].range == (-1, 15)


def test_integer_input_that_indexes_nothing_has_no_range() -> None:
    text = """
func.func @forward(%p: tensor<?xi64> {tessera.input = "positions"}) -> tensor<?xf32> {
  %f = arith.sitofp %p : tensor<?xi64> to tensor<?xf32>
  return %f : tensor<?xf32>
}
"""
    spec = describe_entry(apply_entry_abi(parse(text)))
    assert spec.inputs[0].range is None
    assert spec.outputs[0].shape == ("positions.0",)


def test_describe_needs_the_rewritten_entry() -> None:
    with pytest.raises(LoweringError, match="@forward still returns values; run tessera-cpu"):
        describe_entry(parse(MATMUL))
    with pytest.raises(LoweringError, match="the module has no function @decode"):
        describe_entry(apply_entry_abi(parse(MATMUL)), entry="decode")
