"""Helpers shared by the CPU lowering tests: lowering a one-function module, running it on torch
tensors through the JIT, comparing against a float64 reference."""

from __future__ import annotations

import os

import pytest
import torch
from mlir import ir

from tessera.context import make_context, parse_module
from tessera.lowering.cpu import parallel
from tessera.lowering.cpu.jit import run_function
from tessera.lowering.cpu.pipeline import lower

TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}

# Relative error bounds against a float64 reference (‖out − ref‖ / ‖ref‖).
TOLERANCE = {"f32": 1e-5, "bf16": 1e-2, "f16": 2e-3}


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


def check_close(out: torch.Tensor, ref: torch.Tensor, dtype: str, what: str = "") -> None:
    """``out`` has ``ref``'s shape, no NaN and a relative error within ``dtype``'s bound."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert not out.isnan().any(), f"{what}: NaN in the output"
    error = relative_error(out, ref)
    assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.2e} > {TOLERANCE[dtype]}"


def fresh_generator() -> torch.Generator:
    """A generator with a fresh seed (printed on failure through the test's name in -v)."""
    seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    print(f"seed {seed}")
    return torch.Generator().manual_seed(seed)


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
    """bf16 results rounded like torch's may still differ in a few elements by an ulp (another
    summation order); at most ``fraction`` of them may, and one always may."""
    flips = int((out != expected).sum())
    assert flips <= max(1, fraction * out.numel()), f"{flips} of {out.numel()} elements differ"
