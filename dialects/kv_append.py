"""``tessera.kv.append``: writes new keys and values into a paged KV cache, in place."""

from __future__ import annotations

from tessera.schema import FLOAT, OpDef, dims, element_type, memref, op, operand, same_dim, tensor

from .head_layout import heads_first
from .kv_checks import INDEX_ELEMENTS, verify_cache_pair, verify_sequence_operands


@op("tessera.kv.append")
class KvAppend(OpDef):
    """Writes k [B, Hkv, S, D] and v [B, Hkv, S, Dv] into the caches k_cache [N, Hkv, BS, D]
    and v_cache [N, Hkv, BS, Dv] (N blocks of BS tokens). Token s of sequence b has the cache
    index t = cache_index[b] + s and goes to slot t mod BS of block
    block_table[b, (t / BS) mod M], M the table's width: a table of M blocks is a ring that
    holds the last M·BS tokens (a sliding-window layer's cache), or the whole sequence when
    M·BS covers it. When two tokens of one call share a slot the later one stays. The caches
    are memory (they live across calls), so the op has no result and is not pure."""

    k_cache = operand(memref(rank=4, elements=FLOAT))
    v_cache = operand(memref(rank=4, elements=FLOAT))
    k = operand(tensor(rank=4, elements=FLOAT))
    v = operand(tensor(rank=4, elements=FLOAT))
    block_table = operand(tensor(rank=2, elements=INDEX_ELEMENTS))
    cache_index = operand(tensor(rank=1, elements=INDEX_ELEMENTS))

    def verify(self) -> None:
        verify_cache_pair(self, self.k_cache, self.v_cache)
        k, v = heads_first(self, dims(self.k), dims(self.v))
        kc, vc = dims(self.k_cache), dims(self.v_cache)
        for axis, what in ((0, "batch"), (1, "kv heads"), (2, "length")):
            if not same_dim(k[axis], v[axis]):
                raise self.error(f"k {self.k.type} and v {self.v.type} must agree on {what}")
        if not same_dim(k[1], kc[1]) or not same_dim(k[3], kc[3]):
            raise self.error(
                f"k {self.k.type} must match k_cache {self.k_cache.type} in kv heads and head dim"
            )
        if not same_dim(v[3], vc[3]):
            raise self.error(
                f"v {self.v.type} must match v_cache {self.v_cache.type} in its head dim"
            )
        for name, value, cache in (("k", self.k, self.k_cache), ("v", self.v, self.v_cache)):
            if element_type(value) != element_type(cache):
                raise self.error(
                    f"{name} ({element_type(value)}) and {name}_cache "
                    f"({element_type(cache)}) must share one element type"
                )
        verify_sequence_operands(self, k[0], self.block_table, self.cache_index)
