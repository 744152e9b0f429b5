"""``tessera.attention.paged`` on the CPU: each query row attends over the cache block by block.

For each (batch, query head) pair, which a thread owns, and each query s at cache index
i = cache_index[b] + s, the visible keys are [lo, i] with lo = max(kv_start[b], 0, and with a
window w, i − w + 1). The loop walks the logical blocks that hold them, reads each block's id
from the block table (``kv_append.block_of``: a ring when the table is shorter than the
sequence) and keeps the online-softmax state of ``attention_flash`` in registers: the running
maximum m, the running sum l and the f32 accumulator of Dv values:

    s_j  = softcap(q·k_j · scale)                 one vector dot product per key, into a
                                                  block-sized scratch row
    m'   = max(m, max_j s_j);  α = e^(m − m')
    l    = α·l + Σ_j e^(s_j − m');  acc = α·acc + Σ_j e^(s_j − m')·v_j
    o    = acc / l                                rounded to the output dtype once

Keys and values are read in the caches' dtype and widened to f32, as the flash kernel reads
them; a query that sees no key gets zeros. Block ids are clamped into the cache, so a bad
table cannot make the kernel read outside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import PagedAttention
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vector_math as vm
from . import vectors
from .builder import Kernel
from .host import Host
from .kernel_types import check_unrolled, dtype_of, float_dtype, static_dim
from .kv_append import block_of, clamped_block, load_index
from .parallel import finish_range_core, launch, range_core
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor


@dataclass(frozen=True)
class PagedSpec:
    q_heads: int
    kv_heads: int
    depth: int  # D
    value_depth: int  # Dv
    block_size: int
    dtype: str
    table_dtype: str
    index_dtype: str
    start_dtype: str
    scale: float
    softcap: float | None
    window: int | None

    def symbol(self) -> str:
        return mangle(
            "tessera_attention_paged",
            self.q_heads,
            self.kv_heads,
            self.depth,
            self.value_depth,
            self.block_size,
            self.dtype,
            self.table_dtype,
            self.index_dtype,
            self.start_dtype,
            f"s{self.scale!r}",
            f"c{self.softcap!r}" if self.softcap else "",
            f"w{self.window}" if self.window else "",
        )

    @property
    def q_view(self) -> list[int | None]:
        return [None, self.q_heads, None, self.depth]

    @property
    def o_view(self) -> list[int | None]:
        return [None, self.q_heads, None, self.value_depth]

    def cache_view(self, depth: int) -> list[int | None]:
        return [None, self.kv_heads, self.block_size, depth]

    def types(self) -> list[str]:
        """The core's operand types: q, k_cache, v_cache, table, index, start, o."""
        return [
            memref_type(self.q_view, self.dtype),
            memref_type(self.cache_view(self.depth), self.dtype),
            memref_type(self.cache_view(self.value_depth), self.dtype),
            memref_type([None, None], self.table_dtype),
            memref_type([None], self.index_dtype),
            memref_type([None], self.start_dtype),
            memref_type(self.o_view, self.dtype),
        ]


def _dot(
    k: Kernel, q: list[str], key: str, key_type: str, at: str, spec: PagedSpec, lanes: int
) -> str:
    """q (``lanes``-wide f32 chunks) · the key row at ``key[at, :]``, in f32."""
    vtype = f"vector<{lanes}xf32>"
    total = k.splat(0.0, vtype)
    for q_chunk, (start, count) in zip(q, vectors.chunks(spec.depth, lanes), strict=True):
        row = vectors.load(k, key, key_type, f"{at}, {k.index(start)}", spec.dtype, lanes, count)
        total = vm.fma(k, q_chunk, row, total, vtype)
    return k.op("s", f"vector.reduction <add>, {total} : {vtype} into f32")


@cache
def core_source(spec: PagedSpec, host: Host) -> str:
    lanes = host.lanes
    vtype = f"vector<{lanes}xf32>"
    q_type, kc_type, vc_type, table_type, index_type, start_type, o_type = spec.types()
    k = range_core(
        spec.symbol() + "_core",
        list(
            zip(
                ["%q", "%kc", "%vc", "%table", "%index", "%start", "%o"],
                spec.types(),
                strict=True,
            )
        ),
    )
    scores_type = memref_type([spec.block_size], "f32")
    scores = k.op("sc", f"memref.alloca() : {scores_type}")
    queries = k.op("d", f"memref.dim %q, {k.index(2)} : {q_type}")
    width = k.op("d", f"memref.dim %table, {k.index(1)} : {table_type}")
    blocks = k.op("d", f"memref.dim %kc, {k.index(0)} : {kc_type}")
    # A table or cache without entries has no key to show: every query then gets zeros.
    readable = k.op(
        "p",
        f"arith.andi {k.cmp('ugt', width, 0)}, {k.cmp('ugt', blocks, 0)} : i1",
    )
    width = k.max(width, 1)
    last_block = k.max(k.sub(blocks, 1), 0)
    group = spec.q_heads // spec.kv_heads
    block_size = spec.block_size
    value_chunks = vectors.chunks(spec.value_depth, lanes)
    neg_inf = k.f32(-math.inf)
    zero = k.f32(0.0)
    with k.loop("%begin", "%end", 1) as pairs:
        b = k.op("i", f"arith.divui {pairs.iv}, {k.index(spec.q_heads)} : index")
        h = k.op("i", f"arith.remui {pairs.iv}, {k.index(spec.q_heads)} : index")
        kv_head = k.op("i", f"arith.divui {h}, {k.index(group)} : index") if group > 1 else h
        first = k.max(load_index(k, "%index", index_type, spec.index_dtype, b), 0)
        valid_from = k.max(load_index(k, "%start", start_type, spec.start_dtype, b), 0)
        with k.loop(0, queries, 1) as s_loop:
            s = s_loop.iv
            position = k.add(first, s)
            low = valid_from
            if spec.window is not None:
                low = k.max(low, k.sub(k.add(position, 1), spec.window))
            end = k.op("i", f"arith.select {readable}, {k.add(position, 1)}, {low} : index")
            q_rows = []
            for start, count in vectors.chunks(spec.depth, lanes):
                row = vectors.load(
                    k, "%q", q_type, f"{b}, {h}, {s}, {k.index(start)}", spec.dtype, lanes, count
                )
                q_rows.append(row)
            first_block = k.op("i", f"arith.divui {low}, {k.index(block_size)} : index")
            # No block at all when no key is visible (nor a table entry read).
            end_block = k.op(
                "i",
                f"arith.select {k.cmp('sgt', end, low)}, "
                f"{k.op('i', f'arith.ceildivui {end}, {k.index(block_size)} : index')}, "
                f"{first_block} : index",
            )
            carried = [(neg_inf, "f32"), (zero, "f32")]
            carried += [(k.splat(0.0, vtype), vtype) for _ in value_chunks]
            with k.loop(first_block, end_block, 1, carried) as block_loop:
                logical = block_loop.iv
                running_max, running_sum, *acc = block_loop.args
                block = block_of(k, "%table", table_type, spec.table_dtype, b, logical, width)
                block = clamped_block(k, block, last_block)
                base = k.mul(logical, block_size)
                slot_low = k.max(k.sub(low, base), 0)
                slot_end = k.min(k.sub(end, base), block_size)
                slot_end = k.max(slot_end, slot_low)
                with k.loop(slot_low, slot_end, 1, [(neg_inf, "f32")]) as score_loop:
                    slot = score_loop.iv
                    score = _dot(
                        k, q_rows, "%kc", kc_type, f"{block}, {kv_head}, {slot}", spec, lanes
                    )
                    score = k.op("s", f"arith.mulf {score}, {k.f32(spec.scale)} : f32")
                    if spec.softcap is not None:
                        score = vm.softcap(k, score, spec.softcap, "f32")
                    k.line(f"memref.store {score}, {scores}[{slot}] : {scores_type}")
                    largest = k.op("s", f"arith.maximumf {score_loop.args[0]}, {score} : f32")
                    score_loop.yield_([largest])
                new_max = k.op("s", f"arith.maximumf {running_max}, {score_loop.results[0]} : f32")
                # Until a key is seen the maximum is -inf: subtract 0 instead (α = p = 0).
                empty = k.op("s", f"arith.cmpf oeq, {new_max}, {neg_inf} : f32")
                shift = k.op("s", f"arith.select {empty}, {zero}, {new_max} : f32")
                alpha = vm.exp(k, k.op("s", f"arith.subf {running_max}, {shift} : f32"), "f32")
                alpha_v = k.op("v", f"vector.broadcast {alpha} : f32 to {vtype}")
                scaled_sum = k.op("s", f"arith.mulf {running_sum}, {alpha} : f32")
                scaled = [k.op("v", f"arith.mulf {a}, {alpha_v} : {vtype}") for a in acc]
                with k.loop(
                    slot_low,
                    slot_end,
                    1,
                    [(scaled_sum, "f32"), *((a, vtype) for a in scaled)],
                ) as value_loop:
                    slot = value_loop.iv
                    total, *partial = value_loop.args
                    score = k.op("s", f"memref.load {scores}[{slot}] : {scores_type}")
                    p = vm.exp(k, k.op("s", f"arith.subf {score}, {shift} : f32"), "f32")
                    p_v = k.op("v", f"vector.broadcast {p} : f32 to {vtype}")
                    updated = []
                    for a, (start, count) in zip(partial, value_chunks, strict=True):
                        row = vectors.load(
                            k,
                            "%vc",
                            vc_type,
                            f"{block}, {kv_head}, {slot}, {k.index(start)}",
                            spec.dtype,
                            lanes,
                            count,
                        )
                        updated.append(vm.fma(k, p_v, row, a, vtype))
                    value_loop.yield_([k.op("s", f"arith.addf {total}, {p} : f32"), *updated])
                block_loop.yield_([new_max, *value_loop.results])
            _, total, *acc = block_loop.results
            # No key seen: l = 0 and acc = 0, so dividing by 1 writes zeros.
            nothing = k.op("s", f"arith.cmpf oeq, {total}, {zero} : f32")
            total = k.op("s", f"arith.select {nothing}, {k.f32(1.0)}, {total} : f32")
            total_v = k.op("v", f"vector.broadcast {total} : f32 to {vtype}")
            for a, (start, count) in zip(acc, value_chunks, strict=True):
                value = k.op("v", f"arith.divf {a}, {total_v} : {vtype}")
                vectors.store(
                    k,
                    value,
                    "%o",
                    o_type,
                    f"{b}, {h}, {s}, {k.index(start)}",
                    spec.dtype,
                    lanes,
                    count,
                )
    return finish_range_core(k, host)


def wrapper_source(spec: PagedSpec, symbol: str, view: PagedAttention, host: Host) -> str:
    dtype = spec.dtype
    operands = [
        view.q,
        view.k_cache,
        view.v_cache,
        view.block_table,
        view.cache_index,
        view.kv_start,
    ]
    params = ["%q", "%kc", "%vc", "%table", "%index", "%start"]
    k = Kernel(
        symbol,
        [(p, str(v.type)) for p, v in zip(params, operands, strict=True)],
        results=[str(view.o.type)],
    )
    q_dims = shaped_dims(view.q.type)
    buffers = [buffer_of(k, "%q", q_dims, dtype, spec.q_view)]
    for param, value, depth in (
        ("%kc", view.k_cache, spec.depth),
        ("%vc", view.v_cache, spec.value_depth),
    ):
        core_type = memref_type(spec.cache_view(depth), dtype)
        if str(value.type) != core_type:
            param = k.op("m", f"memref.cast {param} : {value.type} to {core_type}")
        buffers.append(param)
    buffers.append(
        buffer_of(k, "%table", shaped_dims(view.block_table.type), spec.table_dtype, [None, None])
    )
    buffers.append(
        buffer_of(k, "%index", shaped_dims(view.cache_index.type), spec.index_dtype, [None])
    )
    buffers.append(
        buffer_of(k, "%start", shaped_dims(view.kv_start.type), spec.start_dtype, [None])
    )
    sizes = dims_of(k, "%q", q_dims, dtype)
    out = alloc(k, spec.o_view, dtype, [sizes[0], sizes[1], sizes[2], k.index(spec.value_depth)])
    pairs = k.mul(sizes[0], spec.q_heads)
    table_dims = dims_of(k, "%table", shaped_dims(view.block_table.type), spec.table_dtype)
    # At most the table's tokens are visible to each query.
    keys = k.mul(table_dims[1], spec.block_size)
    work = k.mul(k.mul(k.mul(pairs, sizes[2]), keys), spec.depth + spec.value_depth)
    # Any split of the (batch, head) pairs works: threads only read the caches.
    launch(k, spec.symbol() + "_core", [*buffers, out], spec.types(), pairs, 1, work, host)
    return return_tensor(k, out, spec.o_view, dtype, view.o.type)


@rule("tessera.attention.paged")
def lower_paged_attention(op: ir.Operation, host: Host) -> None:
    view = PagedAttention(op)
    static_dim(op, view.q, 1, "q")
    depth = static_dim(op, view.q, 3, "q", unrolled=True)
    for name, value in (("k_cache", view.k_cache), ("v_cache", view.v_cache)):
        static_dim(op, value, 1, name)
        static_dim(op, value, 2, name)
        static_dim(op, value, 3, name, unrolled=True)
    block_size = static_dim(op, view.k_cache, 2, "k_cache")
    check_unrolled(op, block_size, "the block size")
    spec = PagedSpec(
        q_heads=static_dim(op, view.q, 1, "q"),
        kv_heads=static_dim(op, view.k_cache, 1, "k_cache"),
        depth=depth,
        value_depth=static_dim(op, view.v_cache, 3, "v_cache"),
        block_size=block_size,
        dtype=float_dtype(op, view.q, "q"),
        table_dtype=dtype_of(view.block_table),
        index_dtype=dtype_of(view.cache_index),
        start_dtype=dtype_of(view.kv_start),
        scale=float(view.scale),
        softcap=float(view.softcap) if view.softcap is not None else None,
        window=int(view.window) if view.window is not None else None,
    )
    operands = [
        view.q,
        view.k_cache,
        view.v_cache,
        view.block_table,
        view.cache_index,
        view.kv_start,
    ]
    symbol = mangle(spec.symbol(), *(str(v.type) for v in operands), str(view.o.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, view, host)
    replace_with_call(op, symbol, source, operands)
