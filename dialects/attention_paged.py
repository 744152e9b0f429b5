"""``tessera.attention.paged``: causal attention of new queries over a paged KV cache."""

from __future__ import annotations

from tessera.schema import (
    F32,
    FLOAT,
    I64,
    OpDef,
    attr,
    dims,
    element_type,
    finite_positive,
    memref,
    op,
    operand,
    result,
    same_dim,
    tensor,
)

from .head_layout import heads_first
from .kv_checks import INDEX_ELEMENTS, verify_cache_pair, verify_sequence_operands


@op("tessera.attention.paged")
class PagedAttention(OpDef):
    """o = softmax(mask(softcap(q·kᵀ·scale))) · v with q [B, Hq, S, D] and the keys and
    values read from the caches k_cache [N, Hkv, BS, D], v_cache [N, Hkv, BS, Dv] through
    block_table [B, M] as ``tessera.kv.append`` wrote them; o [B, Hq, S, Dv].

    Query s of sequence b sits at cache index i = cache_index[b] + s and sees the keys j with
    kv_start[b] ≤ j ≤ i (causal; the keys before kv_start are padding), and with a window w
    only those with i − j < w. Key j is read from slot j mod BS of block
    block_table[b, (j / BS) mod M]. Query head h reads kv head h / (Hq / Hkv). A query that
    sees no key gets zeros. The op reads memory that ``tessera.kv.append`` writes, so it is
    not pure: it stays after the appends that precede it."""

    q = operand(tensor(rank=4, elements=FLOAT))
    k_cache = operand(memref(rank=4, elements=FLOAT))
    v_cache = operand(memref(rank=4, elements=FLOAT))
    block_table = operand(tensor(rank=2, elements=INDEX_ELEMENTS))
    cache_index = operand(tensor(rank=1, elements=INDEX_ELEMENTS))
    kv_start = operand(tensor(rank=1, elements=INDEX_ELEMENTS))
    o = result(tensor(rank=4, elements=FLOAT))
    scale = attr(F32())
    softcap = attr(F32(), optional=True)
    window = attr(I64(), optional=True)

    def verify(self) -> None:
        verify_cache_pair(self, self.k_cache, self.v_cache)
        q, o = heads_first(self, dims(self.q), dims(self.o))
        kc, vc = dims(self.k_cache), dims(self.v_cache)
        if not same_dim(q[3], kc[3]):
            raise self.error(f"q head dim {q[3]} does not match the k_cache head dim {kc[3]}")
        if q[1] is not None and kc[1] is not None and (kc[1] == 0 or q[1] % kc[1]):
            raise self.error(f"query heads ({q[1]}) must be a multiple of kv heads ({kc[1]})")
        expected = [q[0], q[1], q[2], vc[3]]
        if not all(same_dim(a, b) for a, b in zip(o, expected, strict=True)):
            raise self.error(
                f"result {self.o.type} must have shape [B, Hq, S, Dv] = "
                f"{['?' if d is None else d for d in expected]}"
            )
        dtypes = {element_type(x) for x in (self.q, self.k_cache, self.v_cache, self.o)}
        if len(dtypes) != 1:
            raise self.error(
                f"q, the caches and the result must share one element type, found {sorted(dtypes)}"
            )
        verify_sequence_operands(self, q[0], self.block_table, self.cache_index, self.kv_start)
        if not finite_positive(self.scale):
            raise self.error(f"scale must be a finite positive number, found {self.scale}")
        if self.softcap is not None and not finite_positive(self.softcap):
            raise self.error(f"softcap must be a finite positive number, found {self.softcap}")
        if self.window is not None and self.window <= 0:
            raise self.error(f"window must be positive, found {self.window}")
