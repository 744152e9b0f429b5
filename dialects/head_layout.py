"""The ``tessera.layout`` attribute of the attention ops (flash, paged) and the cache append.

The ops' schemas take [B, H, S, D] tensors. The CUDA target lets its kernels read the
[B, S, H, D] tensors the projections write (and write their result in that layout) instead of
copying through head transposes (``lowering/cuda/attention_layout.py``); it marks such an op
``tessera.layout = "bshd"``. The verifiers check the marked op's tensors in [B, H, S, D] order.
"""

from __future__ import annotations

from tessera.schema import OpDef

LAYOUT_ATTR = "tessera.layout"
BSHD = "bshd"


def heads_first(view: OpDef, *shapes: list[int | None]) -> list[list[int | None]]:
    """``shapes`` as [B, H, S, D]: swapped back when the op is marked ``bshd``; any other
    layout is an error."""
    attributes = view.op.attributes
    if LAYOUT_ATTR not in attributes:
        return list(shapes)
    layout = attributes[LAYOUT_ATTR]
    if str(layout) != f'"{BSHD}"':
        raise view.error(f'{LAYOUT_ATTR} must be "{BSHD}", found {layout}')
    return [[s[0], s[2], s[1], s[3]] for s in shapes]
