"""theta and scaling from rope frequencies: frequency[i] = theta^(-2i/d) / scaling.

The frequencies come from a constant (transformers' ``inv_freq``) computed in f32 and, in a
bf16 or f16 model, rounded to that dtype (``model.to(dtype)`` casts buffers too, and the
constant may then be written as f32 holding the rounded values). The rounding is read off the
values (all of them representable in bf16, or in f16), and every entry must match the formula
to within half a unit in the last place of that type (the rounding) plus 1e-5 relative (the
f32 arithmetic that computed it). theta and scaling
are first estimated by a least-squares fit of log(frequency) against the lane, then the
simplest numbers (fewest significant digits) that still match every entry are taken: the
constants were made from round numbers (10000, 1e6, a factor of 8), and the last lanes
depend so strongly on theta that no other round number fits.

A rounded constant makes the fused op slightly more exact than the chain it replaces:
rope.apply computes the frequencies from theta and scaling rather than reading the rounded
ones.
"""

from __future__ import annotations

import math
import struct

_RELATIVE_TOLERANCE = 1e-5
_MANTISSA_BITS = {"bf16": 7, "f16": 10, "f32": 23, "f64": 52}
# f16's smallest subnormal step; bf16 and f32 share f32's exponent range.
_F16_SMALLEST_STEP = 2.0**-24
_MAX_DIGITS = 6


def _bf16(value: float) -> float:
    """``value`` rounded to bf16 (to nearest, ties to even) through its f32 bits."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _f16(value: float) -> float:
    return float(struct.unpack("<e", struct.pack("<e", value))[0])


def rounding_of(frequencies: list[float]) -> str:
    """The coarsest of bf16, f16 and f32 that holds every frequency (up to the error of
    reading them back from the tables)."""
    for dtype, round_to in (("bf16", _bf16), ("f16", _f16)):
        try:
            if all(abs(round_to(f) - f) <= 1e-12 * f for f in frequencies):
                return dtype
        except (OverflowError, struct.error):
            continue
    return "f32"


def _ulp(value: float, dtype: str) -> float:
    step = 2.0 ** (math.floor(math.log2(value)) - _MANTISSA_BITS.get(dtype, 23))
    return max(step, _F16_SMALLEST_STEP) if dtype == "f16" else step


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def matches(
    frequencies: list[float], head_dim: int, theta: float, scaling: float, dtype: str
) -> bool:
    """Every frequency equals theta^(-2i/head_dim) / scaling up to the tolerance."""
    if not all(math.isfinite(v) and v > 0 for v in (theta, scaling)):
        return False
    for i, found in enumerate(frequencies):
        expected = theta ** (-2 * i / head_dim) / scaling
        tolerance = _RELATIVE_TOLERANCE * expected + _ulp(expected, dtype) / 2
        if abs(found - expected) > tolerance:
            return False
    return True


def fit_frequencies(frequencies: list[float], head_dim: int) -> tuple[float, float] | None:
    """(theta, scaling) of ``frequencies`` (one per pair of lanes, all positive); None when
    no theta and scaling fit."""
    count = len(frequencies)
    if count < 2 or any(f <= 0 for f in frequencies):
        return None
    dtype = rounding_of(frequencies)
    logs = [math.log(f) for f in frequencies]
    mean_lane, mean_log = (count - 1) / 2, sum(logs) / count
    spread = sum((i - mean_lane) ** 2 for i in range(count))
    slope = sum((i - mean_lane) * (y - mean_log) for i, y in enumerate(logs)) / spread
    intercept = mean_log - slope * mean_lane
    theta, scaling = math.exp(-slope * head_dim / 2), math.exp(-intercept)
    candidates = sorted(
        ((t, s) for t in range(1, _MAX_DIGITS + 1) for s in range(1, _MAX_DIGITS + 1)),
        key=sum,
    )
    for theta_digits, scaling_digits in candidates:
        rounded = (_round(theta, theta_digits), _round(scaling, scaling_digits))
        if matches(frequencies, head_dim, *rounded, dtype):
            return rounded
    if matches(frequencies, head_dim, theta, scaling, dtype):
        return theta, scaling
    return None
