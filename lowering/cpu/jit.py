"""Runs a lowered module in process through MLIR's ExecutionEngine (a test and debug aid;
compiled models run through the runtime)."""

from __future__ import annotations

import ctypes

import torch
from mlir import ir
from mlir.execution_engine import ExecutionEngine

from tessera.runtime.memref import DTYPES, descriptor, descriptor_type

_LIBC = ctypes.CDLL(None)
_LIBC.free.argtypes = [ctypes.c_void_p]


def _result_signature(module: ir.Module, name: str) -> tuple[int, torch.dtype]:
    for view in module.body.operations:
        op = view.operation
        if op.name in ("func.func",) and ir.StringAttr(op.attributes["sym_name"]).value == name:
            function_type = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            result = ir.ShapedType(function_type.results[0])
            return result.rank, DTYPES[str(result.element_type)]
    raise KeyError(name)


class JitFunction:
    """One function of a lowered module, JIT-compiled once and callable many times.

    ``module`` is the tensor-level IR (for the result's rank and dtype), ``lowered`` the same
    module in the LLVM dialect; the function returns one tensor, through MLIR's C interface."""

    def __init__(
        self, module: ir.Module, name: str, lowered: ir.Module, opt_level: int = 3
    ) -> None:
        self.rank, self.dtype = _result_signature(module, name)
        self.engine = ExecutionEngine(lowered, opt_level=opt_level)
        # raw_lookup(n) finds the packed wrapper `_mlir_<n>`: void(void** args), where each
        # args[i] points at the i-th argument, here a pointer to a memref descriptor.
        self.function = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(
            self.engine.raw_lookup("_mlir_ciface_" + name)
        )

    def __call__(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        inputs = [t.contiguous() for t in inputs]
        descriptors = [descriptor(t) for t in inputs]
        result = descriptor_type(self.rank)()
        pointers = [ctypes.c_void_p(ctypes.addressof(d)) for d in (result, *descriptors)]
        packed = (ctypes.c_void_p * len(pointers))(*[ctypes.addressof(p) for p in pointers])
        self.function(packed)
        return _take_result(result, self.rank, self.dtype)


def _take_result(result: ctypes.Structure, rank: int, dtype: torch.dtype) -> torch.Tensor:
    """A torch copy of a returned memref; the memref's malloc'ed buffer is freed."""
    sizes = [result.sizes[i] for i in range(rank)]
    strides = [result.strides[i] for i in range(rank)]
    element = torch.empty((), dtype=dtype).element_size()
    count = 1
    for size in sizes:
        count *= size
    span = (sum((s - 1) * st for s, st in zip(sizes, strides, strict=True)) + 1) if count else 0
    raw = (ctypes.c_uint8 * (span * element)).from_address(result.aligned + result.offset * element)
    flat = torch.frombuffer(bytearray(raw), dtype=dtype)
    out = torch.as_strided(flat, sizes, strides).clone()
    _LIBC.free(result.allocated)
    return out


def run_function(
    module: ir.Module, name: str, inputs: list[torch.Tensor], lowered: ir.Module
) -> torch.Tensor:
    """Compiles ``name`` of ``lowered`` and calls it once (see ``JitFunction``)."""
    return JitFunction(module, name, lowered)(inputs)
