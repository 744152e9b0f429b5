"""The CUDA lowering rules of the generation ops: ``tessera.kv.append`` (the new keys and values
into their cache slots) and ``tessera.attention.paged`` (split-KV attention over the cache,
then the combine). The caches are the program's ``state`` buffers; the split scratch goes after
the planned arena.

A step's "rope q, rope k, append" (Gemma 1 and 2), or "norm q, norm k, rope q, rope k,
append" (Gemma 3's q/k norm), is one launch (``kernels/rope_append.py``) where k's rotated
rows are read by the append alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mlir import ir

from tessera.dialects.head_layout import BSHD, LAYOUT_ATTR
from tessera.runtime.expr import substitute

from .kernels.kv_append import KvAppendConfig, build_kv_append
from .kernels.paged_attention import PagedAttentionConfig, build_paged_attention, scratch_elements
from .kernels.rms_norm import PreNorm
from .kernels.rope_append import RopeAppendConfig, build_rope_append, rope_append_problem
from .plan import Binding, LaunchPlan, aligned_bytes, located, product, rule, sequence_rule
from .row_classes import guarded, row_classes
from .rules import _float, _int, _rope_config, _sibling_rope, _strides, _string, dtype_of

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


# Ops that only re-view a tensor (no code, same buffer).
_VIEWS = frozenset({"tensor.cast", "tensor.expand_shape", "tensor.collapse_shape"})


def _source(value: ir.Value) -> ir.Value:
    """``value`` before any views."""
    while True:
        owner = value.owner
        if not isinstance(owner, ir.OpView | ir.Operation) or owner.operation.name not in _VIEWS:
            return value
        value = owner.operation.operands[0]


def _readers(value: ir.Value) -> list[ir.Operation]:
    """The ops that read ``value``'s elements, through views (``tensor.dim`` reads only its
    shape)."""
    found = []
    for use in value.uses:
        user = use.owner.operation
        if user.name in _VIEWS:
            found += _readers(user.results[0])
        elif user.name != "tensor.dim":
            found.append(user)
    return found


def _read_only_by(value: ir.Value, op: ir.Operation) -> bool:
    readers = _readers(value)
    return len(readers) == 1 and readers[0] == op.operation


@dataclass(frozen=True)
class _Prologue:
    """The ops of a step's attention prologue by role (the norms None where the model has
    none)."""

    q_rope: ir.Operation
    k_rope: ir.Operation
    append: ir.Operation
    q_norm: ir.Operation | None
    k_norm: ir.Operation | None


def _prologue(ops: list[ir.Operation]) -> _Prologue | None:
    """The roles of ``ops`` (two norms or none, two ropes, the append), or None where the
    fused kernel does not apply."""
    *norms, first, second, append = ops
    if _string(append, LAYOUT_ATTR, "bhsd") != BSHD or not _sibling_rope(first, second):
        return None
    k_source = _source(append.operands[2])
    k_rope = next((r for r in (first, second) if r.results[0] == k_source), None)
    if k_rope is None or not _read_only_by(k_rope.results[0], append):
        return None
    q_rope = second if k_rope == first else first
    by_rope: dict[str, ir.Operation | None] = {"q": None, "k": None}
    for norm in norms:
        for role, rope in (("q", q_rope), ("k", k_rope)):
            if _source(rope.operands[0]) == norm.results[0] and _read_only_by(
                norm.results[0], rope
            ):
                by_rope[role] = norm
    if norms and (by_rope["q"] is None or by_rope["k"] is None):
        return None
    k_cache, v_cache, _k, v = list(append.operands)[:4]
    q_type, k_type = (ir.ShapedType(r.operands[0].type) for r in (q_rope, k_rope))
    cache_shape = ir.MemRefType(k_cache.type).shape
    if (
        len({dtype_of(x) for x in (q_rope.operands[0], k_rope.operands[0], v, k_cache, v_cache)})
        != 1
        or q_type.rank != 4
        or k_type.rank != 4
        or ir.MemRefType(v_cache.type).shape[3] != cache_shape[3]
        or k_type.shape[2] != cache_shape[1]
        or q_type.shape[3] != cache_shape[3]
        or k_type.shape[3] != cache_shape[3]
        or any(q_rope.attributes[a] != k_rope.attributes[a] for a in ("theta", "rotary_dim"))
        or _float(q_rope, "scaling", 1.0) != _float(k_rope, "scaling", 1.0)
    ):
        return None
    rotary = _int(q_rope, "rotary_dim") or cache_shape[3]
    if rope_append_problem(dtype_of(v), cache_shape[3], rotary, bool(norms)) is not None:
        return None
    return _Prologue(q_rope, k_rope, append, by_rope["q"], by_rope["k"])


def _norm_facts(norm: ir.Operation | None) -> PreNorm | None:
    if norm is None:
        return None
    return PreNorm(
        eps=_float(norm, "eps") or 0.0,
        offset=_float(norm, "offset", 1.0) or 0.0,
        w_dtype=dtype_of(norm.operands[1]),
    )


_ROPES_APPEND = ("tessera.rope.apply", "tessera.rope.apply", "tessera.kv.append")


@sequence_rule(_ROPES_APPEND, lambda ops: _prologue(ops) is not None)
@sequence_rule(
    ("tessera.norm.rms", "tessera.norm.rms", *_ROPES_APPEND),
    lambda ops: _prologue(ops) is not None,
)
def lower_rope_append(ops: list[ir.Operation], plan: LaunchPlan) -> None:
    """A step's attention prologue in one launch (``kernels/rope_append.py``)."""
    parts = _prologue(ops)
    assert parts is not None, "the sequence rule's predicate admitted these ops"
    k_cache, v_cache, _k, v, table, cache_index = list(parts.append.operands)
    heads_kv, block_size, _dim = _cache_dims(k_cache, parts.append)
    cfg = RopeAppendConfig(
        rope=_rope_config(parts.q_rope, plan),
        heads_kv=heads_kv,
        block_size=block_size,
        table_dtype=dtype_of(table),
        q_norm=_norm_facts(parts.q_norm),
        k_norm=_norm_facts(parts.k_norm),
    )
    info = plan.kernel(f"rope append {cfg}", lambda km: build_rope_append(km, cfg))
    q_in = parts.q_norm.operands[0] if parts.q_norm else parts.q_rope.operands[0]
    k_in = parts.k_norm.operands[0] if parts.k_norm else parts.k_rope.operands[0]
    shape = plan.shape(parts.q_rope.operands[0])
    v_sb, v_sh, v_ss = _strides(plan.shape(v), True)
    bindings: dict[str, Binding] = {
        "q": plan.ref(q_in),
        "k": plan.ref(k_in),
        "v": plan.ref(v),
        "pos": plan.ref(parts.q_rope.operands[1]),
        "q_out": plan.ref(parts.q_rope.results[0]),
        "k_cache": plan.ref(k_cache),
        "v_cache": plan.ref(v_cache),
        "block_table": plan.ref(table),
        "cache_index": plan.ref(cache_index),
        "v_sb": v_sb,
        "v_sh": v_sh,
        "v_ss": v_ss,
        "B": shape[0],
        "S": shape[1],
        "M": _table_width(plan, table),
    }
    if parts.q_norm is not None:
        bindings["q_norm_w"] = plan.ref(parts.q_norm.operands[1])
    if parts.k_norm is not None:
        bindings["k_norm_w"] = plan.ref(parts.k_norm.operands[1])
    plan.launch(info, bindings)


def single_sequence_layout(cfg: PagedAttentionConfig) -> PagedAttentionConfig:
    """The split layout for a batch of one. The default (64 keys a split, 4 warps) leaves
    most of an H100 idle when a token has one block per key split (one kv head, a group of
    up to 8 query heads): measured there (``check_paged_attention.py``, H100, batch 1, pair of
    kernels), 32-key splits took Gemma-2B's step from 22.1 to 17.1 µs at 2049 keys (18.2 to
    13.1 at 129), and with 8 warps Gemma 3 1B's window-512 layer from 15.7 to 9.6; with four
    kv heads (Gemma 2 2B), 8 warps on 64-key splits took 17.9 µs against 20.2. At batch 8 the
    default stayed fastest (26.7 µs against 32.5 with 32-key splits). With one kv head each
    warp looks its next step's cache blocks up ahead (``pages_ahead``; not yet timed on a
    GPU); the 8-warp layout of four kv heads spills 8 bytes with it (ptxas, sm_90a), so it
    goes without."""
    if cfg.heads_kv * cfg.head_blocks == 1:
        warps = 8 if cfg.window is not None else 4
        return dataclasses.replace(cfg, keys_per_split=32, warps=warps, pages_ahead=True)
    return dataclasses.replace(cfg, warps=8)


@rule("tessera.attention.paged")
def lower_paged_attention(op: ir.Operation, plan: LaunchPlan) -> None:
    """Split-KV attention and its combine; in a decode plan, a build for a batch of one
    (``single_sequence_layout``) and one for larger batches, each launch guarded to its
    batch sizes (``row_classes.py``)."""
    q, k_cache, v_cache, table, cache_index, kv_start = list(op.operands)
    o = op.results[0]
    heads_kv, block_size, head_dim = _cache_dims(k_cache, op)
    q_shape = plan.shape(q)
    bshd = _bshd(op)
    heads_q = q_shape[2 if bshd else 1]
    if not heads_q.isdigit():
        raise located(f"the query heads must be static for the GPU targets, found {heads_q}", op)
    base = PagedAttentionConfig(
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
    width = _table_width(plan, table)
    sizes = {"B": q_shape[0], "S": q_shape[1 if bshd else 2], "M": width}
    q_sb, q_sh, q_ss = _strides(q_shape, bshd)
    o_sb, o_sh, o_ss = _strides(plan.shape(o), bshd)
    for rows, guard in row_classes(plan.rows_hint, "B"):
        cfg = single_sequence_layout(base) if rows == 1 and guard is not None else base
        partial, combine = build_paged_attention(plan.kernels, cfg)  # built once per config
        plan.infos.update({partial.name: partial, combine.name: combine})
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
        plan.launch(
            guarded(partial, guard, "B"),
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
        plan.launch(
            guarded(combine, guard, "B"),
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
