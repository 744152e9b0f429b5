"""The CUDA lowering rules of the generation ops: ``tessera.kv.append`` (the new keys and values
into their cache slots) and ``tessera.attention.paged`` (split-KV attention over the cache,
then the combine). The caches are the program's ``state`` buffers; the split scratch goes after
the planned arena."""

from __future__ import annotations

from mlir import ir

from tessera.dialects.head_layout import BSHD, LAYOUT_ATTR
from tessera.runtime.expr import substitute

from .kernels.kv_append import KvAppendConfig, build_kv_append
from .kernels.paged_attention import PagedAttentionConfig, build_paged_attention, scratch_elements
from .plan import Binding, LaunchPlan, aligned_bytes, located, product, rule
from .rules import _float, _int, _strides, _string, dtype_of

# Bytes of an f32 element of the split scratch.
_F32 = 4


def _cache_dims(value: ir.Value, op: ir.Operation) -> tuple[int, int, int]:
    """(kv heads, block size, head dim) of a cache memref [N, Hkv, BS, D]."""
    shape = ir.MemRefType(value.type).shape
    if len(shape) != 4 or any(d < 0 for d in shape[1:]):
        raise located(f"a KV cache must be [blocks, kv heads, block size, dim], found {shape}", op)
    return shape[1], shape[2], shape[3]


def _table_width(plan: LaunchPlan, table: ir.Value) -> str:
    return plan.shape(table)[1]


def _bshd(op: ir.Operation) -> bool:
    """Whether the op reads (and writes) [B, S, H, D] tensors (``attention_layout.py``)."""
    return _string(op, LAYOUT_ATTR, "bhsd") == BSHD


@rule("tessera.kv.append")
def lower_kv_append(op: ir.Operation, plan: LaunchPlan) -> None:
    k_cache, v_cache, k, v, table, cache_index = list(op.operands)
    heads_kv, block_size, head_dim = _cache_dims(k_cache, op)
    value_dim = _cache_dims(v_cache, op)[2]
    cfg = KvAppendConfig(
        dtype=dtype_of(k),
        heads_kv=heads_kv,
        head_dim=head_dim,
        value_dim=value_dim,
        block_size=block_size,
        table_dtype=dtype_of(table),
    )
    info = plan.kernel(f"kv append {cfg}", lambda km: build_kv_append(km, cfg))
    shape = plan.shape(k)
    bshd = _bshd(op)
    bindings: dict[str, Binding] = {
        "k": plan.ref(k),
        "v": plan.ref(v),
        "k_cache": plan.ref(k_cache),
        "v_cache": plan.ref(v_cache),
        "block_table": plan.ref(table),
        "cache_index": plan.ref(cache_index),
        "B": shape[0],
        "S": shape[1 if bshd else 2],
        "M": _table_width(plan, table),
    }
    for name, value in (("k", k), ("v", v)):
        sb, sh, ss = _strides(plan.shape(value), bshd)
        bindings.update({f"{name}_sb": sb, f"{name}_sh": sh, f"{name}_ss": ss})
    plan.launch(info, bindings)


@rule("tessera.attention.paged")
def lower_paged_attention(op: ir.Operation, plan: LaunchPlan) -> None:
    q, k_cache, v_cache, table, cache_index, kv_start = list(op.operands)
    o = op.results[0]
    heads_kv, block_size, head_dim = _cache_dims(k_cache, op)
    q_shape = plan.shape(q)
    bshd = _bshd(op)
    heads_q = q_shape[2 if bshd else 1]
    if not heads_q.isdigit():
        raise located(f"the query heads must be static for the GPU targets, found {heads_q}", op)
    cfg = PagedAttentionConfig(
        dtype=dtype_of(q),
        head_dim=head_dim,
        value_dim=_cache_dims(v_cache, op)[2],
        heads_q=int(heads_q),
        heads_kv=heads_kv,
        block_size=block_size,
        scale=_float(op, "scale") or 1.0,
        softcap=_float(op, "softcap"),
        window=_int(op, "window"),
        table_dtype=dtype_of(table),
    )
    partial, combine = build_paged_attention(plan.kernels, cfg)  # built once per config
    plan.infos.update({partial.name: partial, combine.name: combine})
    width = _table_width(plan, table)
    sizes = {"B": q_shape[0], "S": q_shape[1 if bshd else 2], "M": width}
    # The split scratch, as expressions over the program's symbols.
    o_elements, ml_elements = (substitute(text, sizes) for text in scratch_elements(cfg))
    o_bytes = product((o_elements, str(_F32)))
    part_o = plan.scratch_buffer(f"part_o{len(plan.steps)}", "f32", (o_elements,), o_bytes)
    part_ml = plan.scratch_buffer(
        f"part_ml{len(plan.steps)}",
        "f32",
        (ml_elements,),
        product((ml_elements, str(_F32))),
        after=str(aligned_bytes(o_bytes)),
    )
    q_sb, q_sh, q_ss = _strides(q_shape, bshd)
    plan.launch(
        partial,
        {
            "q": plan.ref(q),
            "k_cache": plan.ref(k_cache),
            "v_cache": plan.ref(v_cache),
            "block_table": plan.ref(table),
            "cache_index": plan.ref(cache_index),
            "kv_start": plan.ref(kv_start),
            "part_o": part_o,
            "part_ml": part_ml,
            "q_sb": q_sb,
            "q_sh": q_sh,
            "q_ss": q_ss,
            **sizes,
        },
    )
    o_sb, o_sh, o_ss = _strides(plan.shape(o), bshd)
    plan.launch(
        combine,
        {
            "part_o": part_o,
            "part_ml": part_ml,
            "o": plan.ref(o),
            "o_sb": o_sb,
            "o_sh": o_sh,
            "o_ss": o_ss,
            **sizes,
        },
    )
