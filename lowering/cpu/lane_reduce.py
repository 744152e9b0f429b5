"""Summing accumulator vectors across their lanes, many at once.

A dot-product microtile ends with one accumulator vector per output element; its value is the
sum of the vector's lanes. Reducing each vector alone costs log2(lanes) shuffle+add pairs per
output; the tree here reduces up to ``lanes`` vectors together (each shuffle level serves all of
them), about three instructions per output, and leaves the results side by side in one vector,
where an elementwise epilogue (an activation, a softcap) runs on all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .builder import Kernel

# An elementwise function of the totals (kernel, value, its vector type) -> value, applied
# before the epilogue: on whole reduced vectors (up to `lanes` totals at once) where it can.
Transform = Callable[[Kernel, str, str], str]


def lane_sums(k: Kernel, values: list[str], lanes: int) -> str:
    """One vector whose lane i is the sum of ``values[i]``'s lanes (len(values) ≤ lanes).

    Each level pairs vectors (a, b) and adds [first halves of a's and b's groups] to [second
    halves], halving the group each input occupies: log2(lanes) levels in all."""
    vtype = f"vector<{lanes}xf32>"
    current = list(values)
    count = 1
    while count < len(current):
        count *= 2
    current += [k.splat(0.0, vtype)] * (count - len(current))
    group = lanes // 2
    while group >= 1:
        low = [b + o for b in range(0, 2 * lanes, 2 * group) for o in range(group)]
        high = [b + group + o for b in range(0, 2 * lanes, 2 * group) for o in range(group)]
        pairs = (
            list(zip(current[0::2], current[1::2], strict=True))
            if len(current) > 1
            else [(current[0], current[0])]
        )
        merged = []
        for a, b in pairs:
            lo = k.op("sh", f"vector.shuffle {a}, {b} {low} : {vtype}, {vtype}")
            hi = k.op("sh", f"vector.shuffle {a}, {b} {high} : {vtype}, {vtype}")
            merged.append(k.op("sum", f"arith.addf {lo}, {hi} : {vtype}"))
        current = merged
        group //= 2
    return current[0]


_COMBINE = {"add": "arith.addf", "maximumf": "arith.maximumf"}


def reduce_all(k: Kernel, values: Sequence[str], kind: str, vtype: str) -> str:
    """One f32 from every lane of ``values`` (vectors of ``vtype``): combined lane by lane,
    then across the lanes by ``vector.reduction <kind>`` (``add`` or ``maximumf``)."""
    total = values[0]
    for value in values[1:]:
        total = k.op("v", f"{_COMBINE[kind]} {total}, {value} : {vtype}")
    return k.op("s", f"vector.reduction <{kind}>, {total} : {vtype} into f32")


def slice_lanes(k: Kernel, vector: str, lanes: int, offset: int, width: int) -> str:
    if offset == 0 and width == lanes:
        return vector
    return k.op(
        "sl",
        f"vector.extract_strided_slice {vector} {{offsets = [{offset}], "
        f"sizes = [{width}], strides = [1]}} : vector<{lanes}xf32> to "
        f"vector<{width}xf32>",
    )


def reduce_tile(
    k: Kernel,
    accs: list[list[list[str]]],
    lanes: int,
    transforms: Sequence[Transform | None] = (),
) -> list[list[str]]:
    """accs[row][operand][col] → per (row, operand) a vector<cols x f32> of the totals, with
    operand o's ``transforms[o]`` applied (once per reduced vector, not once per row)."""
    cols = len(accs[0][0])
    runs = [(r, o) for r in range(len(accs)) for o in range(len(accs[0]))]
    per_chunk = max(1, lanes // cols)
    totals: list[list[str]] = [[""] * len(accs[0]) for _ in accs]
    vtype = f"vector<{lanes}xf32>"
    for start in range(0, len(runs), per_chunk):
        chunk = runs[start : start + per_chunk]
        summed = lane_sums(k, [v for r, o in chunk for v in accs[r][o]], lanes)
        transformed: dict[int, str] = {}
        for index, (r, o) in enumerate(chunk):
            source = summed
            transform = transforms[o] if o < len(transforms) else None
            if transform is not None:
                if o not in transformed:
                    transformed[o] = transform(k, summed, vtype)
                source = transformed[o]
            totals[r][o] = slice_lanes(k, source, lanes, index * cols, cols)
    return totals
