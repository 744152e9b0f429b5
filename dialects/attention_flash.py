"""``tessera.attention.flash``: softmax(q·kᵀ) · v in one op, never materialising the scores."""

from __future__ import annotations

from tessera.schema import (
    F32,
    FLOAT,
    I64,
    Bool,
    I64Array,
    OpDef,
    attr,
    dims,
    element_type,
    finite_positive,
    op,
    operand,
    result,
    same_dim,
    tensor,
)

from .head_layout import heads_first

DEFAULT_TILE = (64, 64, 16)


@op("tessera.attention.flash", pure=True)
class FlashAttention(OpDef):
    """o = softmax(mask(softcap(q·kᵀ·scale))) · v with q [B, Hq, S, D], k [B, Hkv, T, D],
    v [B, Hkv, T, Dv], o [B, Hq, S, Dv]. Query head h reads kv head h / (Hq / Hkv) (GQA/MQA).
    softcap c maps s to c·tanh(s/c) after scaling. causal lets query i (aligned to the end of
    the keys) see keys j ≤ i + T - S; window w also hides keys more than w - 1 behind it."""

    q = operand(tensor(rank=4, elements=FLOAT))
    k = operand(tensor(rank=4, elements=FLOAT))
    v = operand(tensor(rank=4, elements=FLOAT))
    o = result(tensor(rank=4, elements=FLOAT))
    causal = attr(Bool(), default=False)
    scale = attr(F32())
    softcap = attr(F32(), optional=True)
    window = attr(I64(), optional=True)
    tile = attr(I64Array(3), default=DEFAULT_TILE, doc="block sizes (query, key, head dim)")

    def verify(self) -> None:
        q, k, v, o = heads_first(self, dims(self.q), dims(self.k), dims(self.v), dims(self.o))
        for name, shape in (("k", k), ("v", v)):
            if not same_dim(q[0], shape[0]):
                raise self.error(f"{name} batch {shape[0]} does not match q's batch {q[0]}")
        if not same_dim(k[1], v[1]) or not same_dim(k[2], v[2]):
            raise self.error(
                f"k {self.k.type} and v {self.v.type} must agree on kv heads and length"
            )
        if not same_dim(q[3], k[3]):
            raise self.error(f"q head dim {q[3]} does not match k head dim {k[3]}")
        if q[1] is not None and k[1] is not None and (k[1] == 0 or q[1] % k[1]):
            raise self.error(f"query heads ({q[1]}) must be a multiple of kv heads ({k[1]})")
        expected = [q[0], q[1], q[2], v[3]]
        if not all(same_dim(a, b) for a, b in zip(o, expected, strict=True)):
            raise self.error(
                f"result {self.o.type} must have shape [B, Hq, S, Dv] = "
                f"{['?' if d is None else d for d in expected]}"
            )
        dtypes = {element_type(x) for x in (self.q, self.k, self.v, self.o)}
        if len(dtypes) != 1:
            raise self.error(
                f"q, k, v and the result must share one element type, found {sorted(dtypes)}"
            )
        if not finite_positive(self.scale):
            raise self.error(f"scale must be a finite positive number, found {self.scale}")
        if self.softcap is not None and not finite_positive(self.softcap):
            raise self.error(f"softcap must be a finite positive number, found {self.softcap}")
        if self.window is not None:
            if self.window <= 0:
                raise self.error(f"window must be positive, found {self.window}")
            if not self.causal:
                raise self.error("window requires causal = true")
        if any(t <= 0 for t in self.tile):
            raise self.error(f"tile sizes must be positive, found {list(self.tile)}")
