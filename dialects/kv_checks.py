"""Checks shared by the KV-cache ops (``tessera.kv.append``, ``tessera.attention.paged``)."""

from __future__ import annotations

from mlir import ir

from tessera.schema import OpDef, dims, same_dim

# Block tables and cache indices hold block ids and token indices.
INDEX_ELEMENTS = ("i32", "i64")


def verify_cache_pair(view: OpDef, k_cache: ir.Value, v_cache: ir.Value) -> None:
    """The k and v caches of one layer agree on blocks, kv heads and block size."""
    kc, vc = dims(k_cache), dims(v_cache)
    for axis, what in ((0, "blocks"), (1, "kv heads"), (2, "block size")):
        if not same_dim(kc[axis], vc[axis]):
            raise view.error(
                f"k_cache {k_cache.type} and v_cache {v_cache.type} must agree on {what}"
            )
    if kc[2] is not None and kc[2] <= 0:
        raise view.error(f"the block size (k_cache dim 2) must be positive, found {kc[2]}")


def verify_sequence_operands(
    view: OpDef, batch: int | None, block_table: ir.Value, *per_sequence: ir.Value
) -> None:
    """The block table [B, M] and each per-sequence [B] operand agree with the batch."""
    if not same_dim(dims(block_table)[0], batch):
        raise view.error(f"block_table {block_table.type} must have one row per sequence")
    for value in per_sequence:
        if not same_dim(dims(value)[0], batch):
            raise view.error(f"{value.type} must have one entry per sequence (batch {batch})")
