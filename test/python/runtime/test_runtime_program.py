"""Running programs: weight binding, input checks, symbolic output shapes, call overhead.

The programs' code is the C library of test_runtime_support, so these tests need no MLIR."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
import torch
from test_runtime_support import VOCAB, write_artifact

import tessera.runtime as rt
from tessera import RuntimeInputError


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> rt.Artifact:
    directory: Path = tmp_path_factory.mktemp("artifact")
    write_artifact(directory)
    loaded = rt.load(directory)
    loaded.bind({"w": torch.tensor([1.0, -2.0, 0.5, 3.0]), "table": torch.randn(VOCAB, 4)})
    return loaded


def test_affine_matches_torch_for_each_batch(artifact: rt.Artifact) -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    for batch in (1, 3, 8):
        x = torch.randn(batch, 4)
        (y,) = artifact["affine"](x)
        assert y.shape == (batch, 4) and y.dtype == torch.float32
        torch.testing.assert_close(y, x * w + 1, rtol=0, atol=0)


def test_gather_resolves_output_shape_from_symbols(artifact: rt.Artifact) -> None:
    table = torch.randn(VOCAB, 4)
    artifact["gather"].bind({"table": table})
    ids = torch.randint(0, VOCAB, (2, 5))
    (y,) = artifact["gather"](ids=ids)
    assert y.shape == (2, 5, 4)
    torch.testing.assert_close(y, table[ids], rtol=0, atol=0)


def test_non_contiguous_inputs_are_made_contiguous(artifact: rt.Artifact) -> None:
    x = torch.randn(4, 3).t()  # [3, 4] with strides (1, 3)
    assert not x.is_contiguous()
    (y,) = artifact["affine"](x)
    torch.testing.assert_close(y, x * torch.tensor([1.0, -2.0, 0.5, 3.0]) + 1)


def test_out_of_range_ids_are_rejected_before_the_call(artifact: rt.Artifact) -> None:
    for bad, where in ((VOCAB, [0, 2]), (-1, [1, 0]), (10**12, [1, 1])):
        ids = torch.zeros(2, 3, dtype=torch.int64)
        ids[tuple(where)] = bad
        with pytest.raises(RuntimeInputError) as raised:
            artifact["gather"](ids)
        expected = f"input 'ids' holds {bad} at index {where}, outside [0, {VOCAB})"
        assert expected in str(raised.value)


BAD_INPUTS = {
    "wrong dtype": (
        lambda: torch.zeros(2, 4, dtype=torch.float64),
        "input 'x' has dtype f64, expected f32 (f32[B, 4])",
    ),
    "wrong rank": (lambda: torch.zeros(2, 4, 1), "input 'x' has rank 3 [2, 4, 1], expected rank 2"),
    "wrong static dim": (lambda: torch.zeros(2, 5), "input 'x' dim 1 is 5, expected 4"),
    "batch above its bound": (
        lambda: torch.zeros(9, 4),
        "input 'x' dim 0 (B) is 9; B must be [1, 8]",
    ),
    "empty batch": (lambda: torch.zeros(0, 4), "input 'x' dim 0 (B) is 0; B must be [1, 8]"),
    "not a tensor": (lambda: [[1.0] * 4], "input 'x' must be a torch.Tensor, found list"),
    "meta device": (lambda: torch.zeros(2, 4, device="meta"), "input 'x' is on meta"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_runtime_input_error(artifact: rt.Artifact, case: str) -> None:
    make, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeInputError) as raised:
        artifact["affine"](make())
    assert message in str(raised.value)


def test_inputs_sharing_a_symbol_must_agree() -> None:
    spec = rt.ProgramSpec(
        "pair",
        (rt.SymbolSpec("B"),),
        (rt.TensorSpec("a", "f32", ("B",)), rt.TensorSpec("b", "f32", ("B", 2))),
        (),
        (rt.TensorSpec("y", "f32", ("B",)),),
        (rt.HostCall("k", "f", (rt.ArgRef("output", "y"),)),),
    )
    # The resolver is never asked to run anything: the check fails first.
    program = rt.Program(spec, {"k": lambda symbol: 1})
    program.bind([])
    with pytest.raises(RuntimeInputError, match=r"input 'b' dim 0 \(B\) is 3, but input 'a' dim 0"):
        program(torch.zeros(2), torch.zeros(3, 2))


def test_input_count_and_names_are_checked(artifact: rt.Artifact) -> None:
    program = artifact["affine"]
    x = torch.zeros(2, 4)
    with pytest.raises(RuntimeInputError, match="takes 1 inputs \\(x\\), found 2"):
        program(x, x)
    with pytest.raises(RuntimeInputError, match="has no input 'ids' \\(inputs: x\\)"):
        program(ids=x)
    with pytest.raises(RuntimeInputError, match="input 'x' is given twice"):
        program(x, x=x)
    with pytest.raises(RuntimeInputError, match="takes 1 inputs"):
        program()


def test_weights_must_be_bound_before_a_call(tmp_path: Path) -> None:
    write_artifact(tmp_path)
    fresh = rt.load(tmp_path)
    with pytest.raises(RuntimeInputError, match="program 'affine' has no weights bound"):
        fresh["affine"](torch.zeros(1, 4))
    (y,) = fresh["noop"](torch.zeros(3))  # a program without weights needs no binding
    assert y.shape == (3,)


BAD_WEIGHTS = {
    "missing": ({"table": torch.zeros(VOCAB, 4)}, "missing weights: 'w'"),
    "wrong dtype": (
        {"w": torch.zeros(4, dtype=torch.bfloat16), "table": torch.zeros(VOCAB, 4)},
        "weight 'w': expected f32[4], found bf16[4]",
    ),
    "wrong shape": (
        {"w": torch.zeros(4), "table": torch.zeros(VOCAB + 1, 4)},
        "weight 'table': expected f32[16, 4], found f32[17, 4]",
    ),
    "not a tensor": ({"w": [0.0] * 4, "table": torch.zeros(VOCAB, 4)}, "found list"),
    "too few in a sequence": ([torch.zeros(4)], "expected 2 weights (w, table), found 1"),
    "a lone tensor": (torch.zeros(4), "weights must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_weights_are_rejected_naming_the_weight(tmp_path: Path, case: str) -> None:
    write_artifact(tmp_path)
    fresh = rt.load(tmp_path)
    weights, message = BAD_WEIGHTS[case]
    with pytest.raises(RuntimeInputError) as raised:
        fresh.bind(weights)
    assert message in str(raised.value)
    assert not fresh["affine"].bound


def test_weights_bind_by_reference_and_in_sequence_order(tmp_path: Path) -> None:
    write_artifact(tmp_path)
    fresh = rt.load(tmp_path)
    w = torch.zeros(4)
    fresh.bind([w, torch.zeros(VOCAB, 4)])
    w += 2.0  # the program sees later in-place updates: no copy was made
    (y,) = fresh["affine"](torch.ones(1, 4))
    torch.testing.assert_close(y, torch.full((1, 4), 3.0))


def test_call_overhead_is_small(artifact: rt.Artifact) -> None:
    """A call of a function that does nothing costs the checks, one output allocation and the
    descriptors: well under 100 µs."""
    program = artifact["noop"]
    x = torch.zeros(8)
    for _ in range(200):
        program(x)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            program(x)
        samples.append((time.perf_counter() - start) / 2000)
    per_call_us = statistics.median(samples) * 1e6
    print(f"per-call overhead: {per_call_us:.1f} us")
    assert per_call_us < 100
