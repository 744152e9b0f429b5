"""Recognising an elementwise function of one tensor by evaluating it: activations and softcaps.

A front end may write tanh-GELU as ``0.5·x·(1 + tanh(k·(x + 0.044715·x³)))`` or
``x·(0.5 + 0.5·tanh(...))``, SiLU as ``x / (1 + exp(-x))`` or ``x · sigmoid(x)``, in f32
between casts or in the tensor's own dtype. Comparing the chain's values at probe points with
the known functions makes the op order irrelevant (``scalar_eval.evaluate_unary``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir

from tessera.ir_types import element_type, shaped_dims

from .constant_values import splat_value
from .match import producer, used_only_by
from .scalar_eval import evaluate_unary, is_float_elementwise

# Probe points where the candidates are all well away from 0, and two on the negative tail,
# where tanh-GELU and erf-GELU differ most (by ~10%; by < 0.5% elsewhere).
PROBES = (-1.2, -0.45, 0.3, 0.85, 1.7, 2.6)
TAIL_PROBES = (-3.1, -2.3)

# Largest relative error accepted against a reference function (at PROBES, at TAIL_PROBES),
# by the narrowest float type the chain computes in. f32 chains must agree to ~1e-6. In bf16
# or f16 the chain's constants are themselves rounded (0.044715 is 0.044677734375 in bf16),
# which moves the values by a few units of rounding (u = 2^-9 for bf16) and ~10x more on the
# tail, where the functions are exponentially small: still far from the other candidates.
TOLERANCE = {
    "f64": (1e-6, 1e-6),
    "f32": (1e-6, 1e-6),
    "f16": (2e-3, 8e-3),
    "bf16": (8e-3, 3e-2),
}
_MANTISSA_BITS = {"bf16": 8, "f16": 11, "f32": 24, "f64": 53}
_CASTS = ("arith.extf", "arith.truncf")


def gelu_tanh(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


# The names are tessera.mlp.swi_glu's ``activation`` values.
ACTIVATIONS: dict[str, Callable[[float], float]] = {
    "gelu_tanh": gelu_tanh,
    "gelu": gelu,
    "silu": silu,
}


@dataclass(frozen=True)
class UnaryChain:
    """Elementwise ops computing ``root`` from one non-constant tensor, ``leaf``."""

    leaf: ir.Value
    root: ir.Value
    ops: tuple[ir.Operation, ...]
    # The narrowest float type an arithmetic op of the chain computes in (casts excluded).
    precision: str

    @property
    def has_casts(self) -> bool:
        return any(op.name in _CASTS for op in self.ops)


def unary_chain(
    root: ir.Value, stop: Callable[[ir.Value], bool] | None = None
) -> UnaryChain | None:
    """The elementwise chain ending at ``root``, or None.

    Walks producers back through float arith/math ops of root's shape; splat constants are
    constants, every other value (or one for which ``stop`` is true) is a leaf. Matches only
    when there is exactly one leaf, at least one op, and every value the chain computes except
    ``root`` is used by the chain alone (a second user would still need it after fusion)."""
    root_shape = shaped_dims(root)
    ops: list[ir.Operation] = []
    leaves: list[ir.Value] = []
    seen: list[ir.Value] = []
    pending = [root]
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.append(value)
        op = producer(value)
        if stop is not None and stop(value):
            leaves.append(value)
        elif op is not None and is_float_elementwise(op.name) and shaped_dims(value) == root_shape:
            ops.append(op)
            pending += list(op.operands)
        elif splat_value(value) is None:
            leaves.append(value)
    if len(leaves) != 1 or not ops:
        return None
    for op in ops:
        if op != producer(root) and not used_only_by(op.results[0], ops):
            return None
    arithmetic = [element_type(op.results[0]) for op in ops if op.name not in _CASTS]
    known = [t for t in arithmetic if t in _MANTISSA_BITS]
    if not known or len(known) != len(arithmetic):
        return None
    precision = min(known, key=lambda t: _MANTISSA_BITS[t])
    return UnaryChain(leaves[0], root, tuple(ops), precision)


def _relative_error(found: float, expected: float) -> float:
    return abs(found - expected) / max(abs(expected), 1e-30)


def _values(chain: UnaryChain, points: tuple[float, ...]) -> list[float] | None:
    values = []
    for point in points:
        value = evaluate_unary(chain.root, chain.leaf, point)
        if value is None or not math.isfinite(value):
            return None
        values.append(value)
    return values


def _agrees(
    values: list[float],
    points: tuple[float, ...],
    reference: Callable[[float], float],
    tolerance: float,
) -> bool:
    return all(
        _relative_error(v, reference(p)) <= tolerance for v, p in zip(values, points, strict=True)
    )


def classify_activation(chain: UnaryChain) -> str | None:
    """The one activation (a key of ``ACTIVATIONS``) the chain computes within the tolerance
    of its precision, or None (unknown, ambiguous, or not evaluable)."""
    core, tail = _values(chain, PROBES), _values(chain, TAIL_PROBES)
    if core is None or tail is None:
        return None
    core_tolerance, tail_tolerance = TOLERANCE[chain.precision]
    found = [
        name
        for name, reference in ACTIVATIONS.items()
        if _agrees(core, PROBES, reference, core_tolerance)
        and _agrees(tail, TAIL_PROBES, reference, tail_tolerance)
    ]
    return found[0] if len(found) == 1 else None


def softcap_value(chain: UnaryChain) -> float | None:
    """c when the chain computes ``c·tanh(y / c)`` of its leaf y (c > 0), else None.

    c is read off the function itself (tanh saturates, so f(y) → c for large y) and the
    function is then compared with ``c·tanh(y/c)`` at probes scaled by c."""
    far = _values(chain, (1e30, -1e30))
    if far is None:
        return None
    cap = far[0]
    tolerance = TOLERANCE[chain.precision][0]
    if not (0 < cap < 1e20) or _relative_error(-far[1], cap) > tolerance:
        return None
    points = tuple(cap * p for p in (*TAIL_PROBES, *PROBES))
    values = _values(chain, points)
    if values is None:
        return None
    return cap if _agrees(values, points, lambda y: cap * math.tanh(y / cap), tolerance) else None
