"""Helpers shared by the CPU lowering tests: lowering a one-function module, running it on torch
tensors through the JIT, comparing against a float64 reference."""

from __future__ import annotations

import pytest
import torch
from mlir import ir

from tessera.context import make_context, parse_module
from tessera.lowering.cpu import parallel
from tessera.lowering.cpu.jit import run_function
from tessera.lowering.cpu.pipeline import lower

TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}

# Unit roundoff of each element type: half the spacing of its numbers just above 1.0, the
# largest relative error of one rounding to nearest.
UNIT_ROUNDOFF = {"f32": 2.0**-24, "bf16": 2.0**-8, "f16": 2.0**-11}


def tolerance(dtype: str, reduction: int = 1) -> float:
    """The bound on ‖out − ref‖ / ‖ref‖ (``ref`` in float64 from the same rounded inputs) of a
    kernel that reads ``dtype``, sums ``reduction`` terms per output in f32 and rounds the
    result to ``dtype``.

    The final rounding costs at most u(dtype). A sum of n terms in f32 errs by about
    √n·u(f32) times the terms' typical size when the rounding errors are independent (Higham
    and Mary, "A new approach to probabilistic rounding error analysis", 2019), and random
    terms add up to about √n times that size, so relative to the result the error is about
    n·u(f32) (for positive terms, as in a norm, it is far smaller). The few further roundings
    a kernel makes (bf16 softmax weights, polynomial exp/tanh, a softcap) are covered by
    doubling the rounding term and the sum term's factor."""
    return 2 * UNIT_ROUNDOFF[dtype] + 4 * reduction * UNIT_ROUNDOFF["f32"]


def lowered(source: str, threads: int = 0) -> tuple[ir.Module, ir.Module, dict[str, str]]:
    """(the module as written, the same module lowered to LLVM, the stages' IR); kernels may
    use ``threads`` cores (0: the host's)."""
    context = make_context()
    original = parse_module(source, context)
    module = parse_module(source, context)
    stages = lower(module, threads=threads)
    return original, module, stages


def run(
    source: str, inputs: list[torch.Tensor], name: str = "forward", threads: int = 0
) -> torch.Tensor:
    """Lowers ``source`` and calls its function ``name`` on ``inputs``."""
    original, module, _ = lowered(source, threads)
    return run_function(original, name, inputs, module)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def check_close(
    out: torch.Tensor,
    ref: torch.Tensor,
    dtype: str,
    what: str = "",
    *,
    reduction: int = 1,
    peer: torch.Tensor | None = None,
) -> None:
    """``out`` has ``ref``'s shape, no NaN and a relative error within
    ``tolerance(dtype, reduction)``, or within twice the error of ``peer`` (torch computing
    the same thing in ``dtype``) where that is larger: a chain of roundings can meet an
    ill-conditioned input (cancellation in a sum of rounded values) on which torch's own
    computation misses the nominal bound as well."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert not out.isnan().any(), f"{what}: NaN in the output"
    error = relative_error(out, ref)
    bound = tolerance(dtype, reduction)
    peer_error = relative_error(peer, ref) if peer is not None else 0.0
    bound = max(bound, 2 * peer_error)
    assert error <= bound, f"{what}: relative error {error:.2e} > {bound:.2e}"


def randn(
    shape: tuple[int, ...], dtype: str, generator: torch.Generator, scale: float = 1.0
) -> torch.Tensor:
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(
        TORCH_DTYPES[dtype]
    )


def force_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels split their work across threads whatever its size, so that small test shapes
    exercise the threaded path (with ``run(..., threads=3)``: an odd split, on any host)."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_WORK", 0)


def assert_rare_flips(out: torch.Tensor, expected: torch.Tensor, fraction: float) -> None:
    """bf16 results rounded like torch's may still differ in a few elements (another summation
    order moves an f32 sum by an ulp, which flips a bf16 rounding); at most ``fraction`` of them
    may, and one always may."""
    flips = int((out != expected).sum())
    assert flips <= max(1, fraction * out.numel()), f"{flips} of {out.numel()} elements differ"
