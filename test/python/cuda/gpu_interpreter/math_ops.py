"""Rules: math and libdevice."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from mlir import ir

from .arith_ops import _elementwise
from .driver import rule
from .kinds import kind_of, round_to

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op


def erf(x: np.ndarray) -> np.ndarray:
    return torch.special.erf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) * b + c


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


MATH: dict[str, Callable[..., np.ndarray]] = {
    "math.exp": np.exp,
    "math.exp2": np.exp2,
    "math.expm1": np.expm1,
    "math.log": np.log,
    "math.log2": np.log2,
    "math.log10": np.log10,
    "math.log1p": np.log1p,
    "math.sqrt": np.sqrt,
    "math.rsqrt": lambda x: 1.0 / np.sqrt(x),
    "math.cbrt": np.cbrt,
    "math.tanh": np.tanh,
    "math.sinh": np.sinh,
    "math.cosh": np.cosh,
    "math.sin": np.sin,
    "math.cos": np.cos,
    "math.tan": np.tan,
    "math.atan": np.arctan,
    "math.erf": erf,
    "math.absf": np.abs,
    "math.floor": np.floor,
    "math.ceil": np.ceil,
    "math.trunc": np.trunc,
    "math.round": _round_half_away,
    "math.roundeven": np.rint,
    "math.fma": _fma,
    "vector.fma": _fma,
}
# libdevice functions the kernels call (llvm.call @__nv_*): the same maths, in f32.
LIBDEVICE: dict[str, Callable[..., np.ndarray]] = {
    "__nv_fsqrt_rn": np.sqrt,
    "__nv_sqrtf": np.sqrt,
    "__nv_rsqrtf": MATH["math.rsqrt"],
    "__nv_expf": np.exp,
    "__nv_exp2f": np.exp2,
    "__nv_expm1f": np.expm1,
    "__nv_logf": np.log,
    "__nv_log2f": np.log2,
    "__nv_log1pf": np.log1p,
    "__nv_tanhf": np.tanh,
    "__nv_erff": erf,
    "__nv_sinf": np.sin,
    "__nv_cosf": np.cos,
    "__nv_fabsf": np.abs,
    "__nv_powf": lambda a, b: np.power(a.astype(np.float64), b),
    "__nv_fmaf": _fma,
    "__nv_fmaf_rn": _fma,
    "__nv_frcp_rn": lambda x: 1.0 / x.astype(np.float64),
    "__nv_fdiv_rn": lambda a, b: a.astype(np.float64) / b,
}


def flush_subnormal(x: np.ndarray) -> np.ndarray:
    """``.ftz``: a result below 2^-126 in magnitude becomes a zero of its sign."""
    return np.where(np.abs(x) < 2.0**-126, np.copysign(0.0, x), x)


# NVVM intrinsics by name: approximate MUFU ops, computed exactly here (then flushed).
INTRINSICS: dict[str, Callable[..., np.ndarray]] = {
    "llvm.nvvm.ex2.approx.ftz.f": lambda x: flush_subnormal(np.exp2(flush_subnormal(x))),
    "llvm.nvvm.ex2.approx.f": np.exp2,
    "llvm.nvvm.rcp.approx.ftz.f": lambda x: flush_subnormal(1.0 / flush_subnormal(x)),
    "llvm.nvvm.rsqrt.approx.ftz.f": lambda x: flush_subnormal(1.0 / np.sqrt(flush_subnormal(x))),
}


def _transcendental(op: ir.Operation, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``fn`` computed in float64 and rounded once to the result type."""
    kind = kind_of(op.results[0].type)
    f64 = np.float64
    if kind.name == "f32":
        if fn is _fma:
            return lambda a, b, c: (a.astype(f64) * b + c).astype(np.float32)
        if len(op.operands) == 1:
            return lambda x: fn(x.astype(f64)).astype(np.float32)
        return lambda *xs: fn(*(x.astype(f64) for x in xs)).astype(np.float32)
    return lambda *xs: round_to(kind, fn(*(np.asarray(x, dtype=f64) for x in xs)))


@rule(*MATH)
def _math(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, _transcendental(op, MATH[op.name]))


@rule("math.isnan", "math.isinf", "math.isfinite")
def _classify(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    fn = {"math.isnan": np.isnan, "math.isinf": np.isinf, "math.isfinite": np.isfinite}[op.name]
    return _elementwise(k, op, fn)


@rule("llvm.call")
def _libdevice(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
    if callee not in LIBDEVICE:
        raise NotImplementedError(f"{k.name}: the interpreter does not know {callee}")
    return _elementwise(k, op, _transcendental(op, LIBDEVICE[callee]))


@rule("llvm.call_intrinsic")
def _intrinsic(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    name = ir.StringAttr(op.attributes["intrin"]).value
    if name not in INTRINSICS:
        raise NotImplementedError(f"{k.name}: the interpreter does not know {name}")
    return _elementwise(k, op, _transcendental(op, INTRINSICS[name]))


@rule("nvvm.rcp.approx.ftz.f")
def _rcp(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    return _elementwise(k, op, _transcendental(op, INTRINSICS["llvm.nvvm.rcp.approx.ftz.f"]))


@rule("llvm.inline_asm")
def _inline_asm(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    text = ir.StringAttr(op.attributes["asm_string"]).value
    if text.strip() != "mov.b64 $0, $1;":
        raise NotImplementedError(f"{k.name}: the interpreter does not run inline asm {text!r}")
    return _elementwise(k, op, lambda x: x)


@rule("llvm.extractvalue")
def _extractvalue(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    (position,) = list(ir.DenseI64ArrayAttr(op.attributes["position"]))
    return _elementwise(k, op, lambda s: s[:, position])


@rule("nvvm.convert.f32x2.to.bf16x2", "nvvm.convert.f32x2.to.f16x2")
def _convert_pair(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """cvt.rn.{bf16,f16}x2.f32 d, hi, lo: element 0 (the low half) is ``lo``."""
    attrs = {name: str(op.attributes[name]) for name in op.attributes}
    rounding, saturation = attrs.get("rnd", "rn"), attrs.get("sat", "none")
    if "rn>" not in rounding or "none" not in saturation or attrs.get("relu", "false") != "false":
        raise NotImplementedError(f"{k.name}: {op.name} with {attrs}")
    kind = kind_of(op.results[0].type)
    return _elementwise(
        k, op, lambda hi, lo: round_to(kind, np.stack(np.broadcast_arrays(lo, hi), axis=-1))
    )
