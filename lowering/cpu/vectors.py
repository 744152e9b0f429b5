"""Vector loads and stores of memref rows in f32: widened from bf16/f16 on load, rounded on
store, masked when fewer than a full vector of elements remain."""

from __future__ import annotations

from .builder import Kernel


def mask(k: Kernel, lanes: int, width: int) -> str:
    """A constant vector<lanes x i1> with the first ``width`` lanes set."""
    values = ", ".join("true" if i < width else "false" for i in range(lanes))
    return k.constant(f"dense<[{values}]>", f"vector<{lanes}xi1>")


def load(
    k: Kernel,
    buffer: str,
    buffer_type: str,
    indices: str,
    dtype: str,
    lanes: int,
    width: int | None = None,
    widen: bool = True,
) -> str:
    """``width`` (default ``lanes``) elements at ``buffer[indices]`` as vector<lanes x f32>
    (lanes past ``width`` are zero); with ``widen=False`` the vector keeps ``dtype``."""
    width = lanes if width is None else width
    vtype = f"vector<{lanes}x{dtype}>"
    if width == lanes:
        value = k.op("ld", f"vector.load {buffer}[{indices}] : {buffer_type}, {vtype}")
    else:
        value = k.op(
            "ld",
            f"vector.maskedload {buffer}[{indices}], {mask(k, lanes, width)}, "
            f"{k.splat(0.0, vtype)} : {buffer_type}, vector<{lanes}xi1>, {vtype} "
            f"into {vtype}",
        )
    if dtype == "f32" or not widen:
        return value
    return k.op("cv", f"arith.extf {value} : {vtype} to vector<{lanes}xf32>")


def round_to(k: Kernel, value: str, lanes: int, dtype: str) -> str:
    """An f32 vector rounded to ``dtype`` (round to nearest even, as torch's casts)."""
    if dtype == "f32":
        return value
    return k.op("cv", f"arith.truncf {value} : vector<{lanes}xf32> to vector<{lanes}x{dtype}>")


def through(k: Kernel, value: str, lanes: int, dtype: str) -> str:
    """An f32 vector rounded to ``dtype`` and widened back: what torch holds after an op whose
    result is stored in ``dtype``."""
    if dtype == "f32":
        return value
    rounded = round_to(k, value, lanes, dtype)
    return k.op("cv", f"arith.extf {rounded} : vector<{lanes}x{dtype}> to vector<{lanes}xf32>")


def store(
    k: Kernel,
    value: str,
    buffer: str,
    buffer_type: str,
    indices: str,
    dtype: str,
    lanes: int,
    width: int | None = None,
    rounded: bool = False,
) -> None:
    """Rounds an f32 vector to ``dtype`` (unless ``rounded``: it already has that type) and
    stores its first ``width`` lanes."""
    width = lanes if width is None else width
    if not rounded:
        value = round_to(k, value, lanes, dtype)
    vtype = f"vector<{lanes}x{dtype}>"
    if width == lanes:
        k.line(f"vector.store {value}, {buffer}[{indices}] : {buffer_type}, {vtype}")
        return
    k.line(
        f"vector.maskedstore {buffer}[{indices}], {mask(k, lanes, width)}, {value} : "
        f"{buffer_type}, vector<{lanes}xi1>, {vtype}"
    )


def chunks(width: int, lanes: int) -> list[tuple[int, int]]:
    """(start, width) of each vector along a row of ``width``; the last may be partial."""
    return [(start, min(lanes, width - start)) for start in range(0, width, lanes)]
