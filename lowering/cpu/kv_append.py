"""``tessera.kv.append`` on the CPU: each new token's key and value rows copied into their cache
slots, in place.

For token s of sequence b the cache index is t = cache_index[b] + s; its slot is t mod BS of
block block_table[b, (t / BS) mod M]. Rows are copied in the caches' dtype without widening.
The caches are the caller's memory, so every index the copy computes is kept inside them
whatever the inputs hold: a negative cache index counts as 0, a block id is clamped to
[0, N), and a call whose table or cache has no entries writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import KvAppend
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import call_kernel, mangle
from . import vectors
from .builder import Kernel
from .host import Host
from .kernel_types import check, check_unrolled, dtype_of, float_dtype, static_dim
from .registry import rule
from .tensors import buffer_of


@dataclass(frozen=True)
class AppendSpec:
    kv_heads: int
    depth: int  # D
    value_depth: int  # Dv
    block_size: int
    dtype: str
    table_dtype: str
    index_dtype: str

    def symbol(self) -> str:
        return mangle(
            "tessera_kv_append",
            self.kv_heads,
            self.depth,
            self.value_depth,
            self.block_size,
            self.dtype,
            self.table_dtype,
            self.index_dtype,
        )

    def cache_view(self, depth: int) -> list[int | None]:
        return [None, self.kv_heads, self.block_size, depth]

    def new_view(self, depth: int) -> list[int | None]:
        return [None, self.kv_heads, None, depth]


def block_of(
    k: Kernel, table: str, table_type: str, table_dtype: str, b: str, logical: str, width: str
) -> str:
    """The block holding logical block ``logical`` of sequence ``b``: the table's entry at
    ``logical mod width`` (``width`` > 0), as an index."""
    column = k.op("i", f"arith.remui {logical}, {width} : index")
    raw = k.op("t", f"memref.load {table}[{b}, {column}] : {table_type}")
    return k.op("i", f"arith.index_cast {raw} : {table_dtype} to index")


def clamped_block(k: Kernel, block: str, last: str) -> str:
    """``block`` kept inside [0, last]: a bad table entry cannot reach outside the cache."""
    return k.min(k.max(block, 0), last)


def load_index(k: Kernel, buffer: str, buffer_type: str, dtype: str, b: str) -> str:
    """Entry ``b`` of a per-sequence index buffer, as an index."""
    raw = k.op("t", f"memref.load {buffer}[{b}] : {buffer_type}")
    return k.op("i", f"arith.index_cast {raw} : {dtype} to index")


@cache
def core_source(spec: AppendSpec, host: Host) -> str:
    lanes = host.lanes
    dtype = spec.dtype
    kc_type = memref_type(spec.cache_view(spec.depth), dtype)
    vc_type = memref_type(spec.cache_view(spec.value_depth), dtype)
    k_type = memref_type(spec.new_view(spec.depth), dtype)
    v_type = memref_type(spec.new_view(spec.value_depth), dtype)
    table_type = memref_type([None, None], spec.table_dtype)
    index_type = memref_type([None], spec.index_dtype)
    k = Kernel(
        spec.symbol() + "_core",
        [
            ("%kc", kc_type),
            ("%vc", vc_type),
            ("%k", k_type),
            ("%v", v_type),
            ("%table", table_type),
            ("%index", index_type),
        ],
    )
    batch = k.op("d", f"memref.dim %k, {k.index(0)} : {k_type}")
    tokens = k.op("d", f"memref.dim %k, {k.index(2)} : {k_type}")
    width = k.op("d", f"memref.dim %table, {k.index(1)} : {table_type}")
    blocks = k.op("d", f"memref.dim %kc, {k.index(0)} : {kc_type}")
    has_width = k.cmp("ugt", width, 0)
    has_blocks = k.cmp("ugt", blocks, 0)
    writable = k.op("p", f"arith.andi {has_width}, {has_blocks} : i1")
    with k.if_(writable):
        last = k.sub(blocks, 1)
        with k.loop(0, batch, 1) as b_loop:
            b = b_loop.iv
            first = k.max(load_index(k, "%index", index_type, spec.index_dtype, b), 0)
            with k.loop(0, tokens, 1) as s_loop:
                s = s_loop.iv
                position = k.add(first, s)
                logical = k.op("i", f"arith.divui {position}, {k.index(spec.block_size)} : index")
                slot = k.op("i", f"arith.remui {position}, {k.index(spec.block_size)} : index")
                block = block_of(k, "%table", table_type, spec.table_dtype, b, logical, width)
                block = clamped_block(k, block, last)
                with k.loop(0, spec.kv_heads, 1) as h_loop:
                    h = h_loop.iv
                    for source, source_type, target, target_type, depth in (
                        ("%k", k_type, "%kc", kc_type, spec.depth),
                        ("%v", v_type, "%vc", vc_type, spec.value_depth),
                    ):
                        for start, count in vectors.chunks(depth, lanes):
                            column = k.index(start)
                            row = vectors.load(
                                k,
                                source,
                                source_type,
                                f"{b}, {h}, {s}, {column}",
                                dtype,
                                lanes,
                                count,
                                widen=False,
                            )
                            vectors.store(
                                k,
                                row,
                                target,
                                target_type,
                                f"{block}, {h}, {slot}, {column}",
                                dtype,
                                lanes,
                                count,
                                rounded=True,
                            )
    k.line("return")
    return k.text()


def wrapper_source(spec: AppendSpec, symbol: str, view: KvAppend) -> str:
    dtype = spec.dtype
    operands = [view.k_cache, view.v_cache, view.k, view.v, view.block_table, view.cache_index]
    params = ["%kc", "%vc", "%k", "%v", "%table", "%index"]
    k = Kernel(symbol, [(p, str(v.type)) for p, v in zip(params, operands, strict=True)])
    caches = []
    for param, value, depth in (
        ("%kc", view.k_cache, spec.depth),
        ("%vc", view.v_cache, spec.value_depth),
    ):
        core_type = memref_type(spec.cache_view(depth), dtype)
        if str(value.type) != core_type:
            param = k.op("m", f"memref.cast {param} : {value.type} to {core_type}")
        caches.append(param)
    new = [
        buffer_of(k, "%k", shaped_dims(view.k.type), dtype, spec.new_view(spec.depth)),
        buffer_of(k, "%v", shaped_dims(view.v.type), dtype, spec.new_view(spec.value_depth)),
    ]
    table = buffer_of(
        k, "%table", shaped_dims(view.block_table.type), spec.table_dtype, [None, None]
    )
    index = buffer_of(k, "%index", shaped_dims(view.cache_index.type), spec.index_dtype, [None])
    types = [
        memref_type(spec.cache_view(spec.depth), dtype),
        memref_type(spec.cache_view(spec.value_depth), dtype),
        memref_type(spec.new_view(spec.depth), dtype),
        memref_type(spec.new_view(spec.value_depth), dtype),
        memref_type([None, None], spec.table_dtype),
        memref_type([None], spec.index_dtype),
    ]
    k.call_out_of_line(spec.symbol() + "_core", [*caches, *new, table, index], types)
    k.line("return")
    return k.text()


@rule("tessera.kv.append")
def lower_kv_append(op: ir.Operation, host: Host) -> None:
    view = KvAppend(op)
    for name, value in (("k_cache", view.k_cache), ("v_cache", view.v_cache)):
        static_dim(op, value, 1, name)
        static_dim(op, value, 2, name)
        static_dim(op, value, 3, name, unrolled=True)
    for name, value in (("k", view.k), ("v", view.v)):
        static_dim(op, value, 1, name)
        static_dim(op, value, 3, name, unrolled=True)
    block_size = static_dim(op, view.k_cache, 2, "k_cache")
    check_unrolled(op, block_size, "the block size")
    dtype = float_dtype(op, view.k, "k")
    check(float_dtype(op, view.v, "v") == dtype, op, "k and v must share one element type")
    spec = AppendSpec(
        kv_heads=static_dim(op, view.k_cache, 1, "k_cache"),
        depth=static_dim(op, view.k_cache, 3, "k_cache"),
        value_depth=static_dim(op, view.v_cache, 3, "v_cache"),
        block_size=block_size,
        dtype=dtype,
        table_dtype=dtype_of(view.block_table),
        index_dtype=dtype_of(view.cache_index),
    )
    operands = [view.k_cache, view.v_cache, view.k, view.v, view.block_table, view.cache_index]
    symbol = mangle(spec.symbol(), *(str(v.type) for v in operands))
    source = core_source(spec, host) + wrapper_source(spec, symbol, view)
    call_kernel(op, symbol, source, operands, [])
    op.erase()
