"""``tessera.attention.flash`` on the CPU: a tiled online-softmax loop nest.

For each batch, query head and tile of ``tile[0]`` queries, the loop walks the key tiles of
``tile[1]`` keys that hold at least one visible key (causal and window bounds are computed per
query tile, so fully masked tiles are never visited) and keeps, per query row, the running
maximum m, the running sum l and an f32 accumulator of Dv values:

    s    = mask(softcap(q·kᵀ · scale))          the dot-product microkernel, tile-sized
    m'   = max(m, max_j s);  α = e^(m − m');  p = e^(s − m')
    l    = α·l + Σ_j p;      acc = α·acc + p·v   the outer-product microkernel (α applied as
                                                 the accumulator is loaded)
    o    = acc / l                               rounded to the output dtype once

Only tile-sized scratch buffers exist ([tile0, tile1] scores, [tile0, Dv] accumulator, three
[tile0] row statistics), allocated once per call. q, k and v are read in their own dtype and
widened to f32 (bf16 q·kᵀ uses ``vdpbf16ps``, whose products are exact in f32). Query head h
reads kv head h / (Hq / Hkv). Query i (aligned to the end of the keys) sees key j when
j ≤ i + T − S (causal) and i + T − S − j < window; a query that sees no key gets zeros.
The third tile size (the head-dim block) has no role on the CPU: the head dimension is walked
in vector-register steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from mlir import ir

from tessera.dialects import FlashAttention
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vector_math as vm
from . import vectors
from .builder import Kernel
from .host import Host
from .kernel_types import check, check_unrolled, float_dtype, static_dim, static_dims
from .lane_reduce import Transform, reduce_all
from .matmul import Epilogue, Operand, Tiling, emit_matmul
from .matmul_nn import emit_matmul_nn
from .parallel import finish_range_core, launch, range_core
from .registry import rule
from .tensors import alloc, buffer_of, dims_of, return_tensor


@dataclass(frozen=True)
class AttentionSpec:
    q_heads: int
    kv_heads: int
    depth: int  # D
    value_depth: int  # Dv
    dtype: str
    causal: bool
    scale: float
    softcap: float | None
    window: int | None
    block_q: int
    block_k: int

    def symbol(self) -> str:
        return mangle(
            "tessera_attention",
            self.q_heads,
            self.kv_heads,
            self.depth,
            self.value_depth,
            self.dtype,
            "causal" if self.causal else "full",
            f"s{self.scale!r}",
            f"c{self.softcap!r}" if self.softcap else "",
            f"w{self.window}" if self.window else "",
            self.block_q,
            self.block_k,
        )

    @property
    def q_view(self) -> list[int | None]:
        return [None, self.q_heads, None, self.depth]

    @property
    def k_view(self) -> list[int | None]:
        return [None, self.kv_heads, None, self.depth]

    @property
    def v_view(self) -> list[int | None]:
        return [None, self.kv_heads, None, self.value_depth]

    @property
    def o_view(self) -> list[int | None]:
        return [None, self.q_heads, None, self.value_depth]


@dataclass
class _Scratch:
    scores: str
    scores_type: str
    acc: str
    acc_type: str
    stats: str  # rows: 0 running max, 1 running sum, 2 rescale factor of the current tile
    stats_type: str


def _key_bounds(
    k: Kernel, spec: AttentionSpec, q0: str, rows: str, offset: str, keys: str
) -> tuple[str, str]:
    """[first, end) of the keys any query of the tile [q0, q0 + rows) may see."""
    end = keys
    if spec.causal:
        # The tile's last query sees keys up to q0 + rows - 1 + offset.
        end = k.min(k.max(k.add(k.add(q0, rows), offset), 0), keys)
    first = k.index(0)
    if spec.window is not None:
        first = k.max(k.add(k.add(q0, offset), 1 - spec.window), 0)
    return first, end


def _score_epilogue(
    k: Kernel, spec: AttentionSpec, scratch: _Scratch, q0: str, k0: str, offset: str, end: str
) -> Epilogue:
    """Masks one row's (scaled, softcapped) scores and stores them in the scores tile."""

    def epilogue(k: Kernel, row: str, column: str, width: int, totals: list[str]) -> None:
        vtype = f"vector<{width}xf32>"
        value = totals[0]
        # Keys k0 + column + lane are visible below `high` and from `low` on.
        query = k.add(q0, row)
        high = end
        if spec.causal:
            high = k.min(k.add(k.add(query, offset), 1), end)
        start = k.add(k0, column)
        itype = f"vector<{width}xindex>"
        lanes = k.op("v", f"vector.step : {itype}")
        keys = k.op(
            "v",
            f"arith.addi {k.op('v', f'vector.broadcast {start} : index to {itype}')}"
            f", {lanes} : {itype}",
        )
        high_v = k.op("v", f"vector.broadcast {high} : index to {itype}")
        visible = k.op("v", f"arith.cmpi slt, {keys}, {high_v} : {itype}")
        if spec.window is not None:
            low = k.add(k.add(query, offset), 1 - spec.window)
            low_v = k.op("v", f"vector.broadcast {low} : index to {itype}")
            after = k.op("v", f"arith.cmpi sge, {keys}, {low_v} : {itype}")
            visible = k.op("v", f"arith.andi {visible}, {after} : vector<{width}xi1>")
        value = vm.select(k, visible, value, k.splat(-math.inf, vtype), vtype)
        k.line(
            f"vector.store {value}, {scratch.scores}[{row}, {column}] : "
            f"{scratch.scores_type}, {vtype}"
        )

    return epilogue


def _scaled(spec: AttentionSpec) -> Transform:
    """s·scale, then the softcap: elementwise, so it runs on whole reduced vectors."""

    def transform(k: Kernel, value: str, vtype: str) -> str:
        value = k.op("v", f"arith.mulf {value}, {k.splat(spec.scale, vtype)} : {vtype}")
        if spec.softcap is not None:
            value = vm.softcap(k, value, spec.softcap, vtype)
        return value

    return transform


def _softmax_rows(k: Kernel, spec: AttentionSpec, scratch: _Scratch, rows: str, lanes: int) -> None:
    """Per row: new maximum, rescale factor, p = e^(s - m') in place, updated sum."""
    vtype = f"vector<{lanes}xf32>"
    chunks = vectors.chunks(spec.block_k, lanes)
    stats, stats_type = scratch.stats, scratch.stats_type
    with k.loop(0, rows, 1) as loop:
        row = loop.iv
        values = [
            vectors.load(
                k, scratch.scores, scratch.scores_type, f"{row}, {k.index(c)}", "f32", lanes, w
            )
            for c, w in chunks
        ]
        # Lanes past a partial last chunk load as 0: give them -inf so they cannot win the max.
        if chunks[-1][1] != lanes:
            values[-1] = vm.select(
                k,
                vectors.mask(k, lanes, chunks[-1][1]),
                values[-1],
                k.splat(-math.inf, vtype),
                vtype,
            )
        tile_max = reduce_all(k, values, "maximumf", vtype)
        old_max = k.op("s", f"memref.load {stats}[{k.index(0)}, {row}] : {stats_type}")
        new_max = k.op("s", f"arith.maximumf {old_max}, {tile_max} : f32")
        # A row that has seen only masked keys keeps m' = -inf; subtract 0 instead (p = 0).
        is_empty = k.op("s", f"arith.cmpf oeq, {new_max}, {k.f32(-math.inf)} : f32")
        base = k.op("s", f"arith.select {is_empty}, {k.f32(0.0)}, {new_max} : f32")
        shift = k.op("s", f"arith.subf {old_max}, {base} : f32")
        alpha = vm.exp(k, shift, "f32")
        base_v = k.op("v", f"vector.broadcast {base} : f32 to {vtype}")
        total = k.splat(0.0, vtype)
        for (c, w), value in zip(chunks, values, strict=True):
            p = vm.exp(k, k.op("v", f"arith.subf {value}, {base_v} : {vtype}"), vtype)
            vectors.store(
                k, p, scratch.scores, scratch.scores_type, f"{row}, {k.index(c)}", "f32", lanes, w
            )
            total = k.op("v", f"arith.addf {total}, {p} : {vtype}")
        tile_sum = k.op("s", f"vector.reduction <add>, {total} : {vtype} into f32")
        old_sum = k.op("s", f"memref.load {stats}[{k.index(1)}, {row}] : {stats_type}")
        new_sum = vm.fma(k, old_sum, alpha, tile_sum, "f32")
        k.line(f"memref.store {new_max}, {stats}[{k.index(0)}, {row}] : {stats_type}")
        k.line(f"memref.store {new_sum}, {stats}[{k.index(1)}, {row}] : {stats_type}")
        k.line(f"memref.store {alpha}, {stats}[{k.index(2)}, {row}] : {stats_type}")


@cache
def core_source(spec: AttentionSpec, host: Host) -> str:
    lanes = host.lanes
    vtype = f"vector<{lanes}xf32>"
    dtype = spec.dtype
    types = {
        name: memref_type(view, dtype)
        for name, view in (
            ("q", spec.q_view),
            ("k", spec.k_view),
            ("v", spec.v_view),
            ("o", spec.o_view),
        )
    }
    k = range_core(spec.symbol() + "_core", [(f"%{n}", t) for n, t in types.items()])
    block_q, block_k, value_depth = spec.block_q, spec.block_k, spec.value_depth
    scratch = _Scratch(
        scores=k.op("sc", f"memref.alloc() : {memref_type([block_q, block_k], 'f32')}"),
        scores_type=memref_type([block_q, block_k], "f32"),
        acc=k.op("sc", f"memref.alloc() : {memref_type([block_q, value_depth], 'f32')}"),
        acc_type=memref_type([block_q, value_depth], "f32"),
        stats=k.op("sc", f"memref.alloc() : {memref_type([3, block_q], 'f32')}"),
        stats_type=memref_type([3, block_q], "f32"),
    )
    queries = k.op("d", f"memref.dim %q, {k.index(2)} : {types['q']}")
    keys = k.op("d", f"memref.dim %k, {k.index(2)} : {types['k']}")
    offset = k.sub(keys, queries)
    last_key = k.max(k.sub(keys, 1), 0)
    group = spec.q_heads // spec.kv_heads
    step = 2 * lanes if dtype == "bf16" and host.bf16_dot else lanes
    qk_tiling = Tiling(mr=2, nr=8, kc=-(-spec.depth // step) * step, mc=block_q)
    # One iteration per (batch, query head) pair in [begin, end), the range a thread owns.
    with k.loop("%begin", "%end", 1) as pairs:
        b = k.op("i", f"arith.divui {pairs.iv}, {k.index(spec.q_heads)} : index")
        h = k.op("i", f"arith.remui {pairs.iv}, {k.index(spec.q_heads)} : index")
        kv_head = k.op("i", f"arith.divui {h}, {k.index(group)} : index") if group > 1 else h
        with k.loop(0, queries, block_q) as q_loop:
            q0 = q_loop.iv
            rows = k.min(k.sub(queries, q0), block_q)
            with k.loop(0, rows, 1) as init:
                k.line(
                    f"memref.store {k.f32(-math.inf)}, {scratch.stats}[{k.index(0)}, "
                    f"{init.iv}] : {scratch.stats_type}"
                )
                k.line(
                    f"memref.store {k.f32(0.0)}, {scratch.stats}[{k.index(1)}, {init.iv}] "
                    f": {scratch.stats_type}"
                )
                for c, w in vectors.chunks(value_depth, lanes):
                    vectors.store(
                        k,
                        k.splat(0.0, vtype),
                        scratch.acc,
                        scratch.acc_type,
                        f"{init.iv}, {k.index(c)}",
                        "f32",
                        lanes,
                        w,
                    )
            first, end = _key_bounds(k, spec, q0, rows, offset, keys)
            with k.loop(first, end, block_k) as k_loop:
                k0 = k_loop.iv
                cols = k.min(k.sub(end, k0), block_k)
                q_rows = Operand("%q", types["q"], dtype, prefix=(b, h), row_offset=q0)
                k_rows = Operand(
                    "%k", types["k"], dtype, prefix=(b, kv_head), row_offset=k0, row_limit=last_key
                )
                emit_matmul(
                    k,
                    q_rows,
                    rows,
                    [k_rows],
                    block_k,
                    spec.depth,
                    _score_epilogue(k, spec, scratch, q0, k0, offset, end),
                    host,
                    qk_tiling,
                    transforms=[_scaled(spec)],
                )
                _softmax_rows(k, spec, scratch, rows, lanes)
                p_rows = Operand(scratch.scores, scratch.scores_type, "f32")
                v_rows = Operand("%v", types["v"], dtype, prefix=(b, kv_head), row_offset=k0)

                def rescaled(k: Kernel, row: str, column: str, width: int) -> str:
                    acc = vectors.load(
                        k, scratch.acc, scratch.acc_type, f"{row}, {column}", "f32", lanes, width
                    )
                    alpha = k.op(
                        "s",
                        f"memref.load {scratch.stats}[{k.index(2)}, {row}] : {scratch.stats_type}",
                    )
                    alpha_v = k.op("v", f"vector.broadcast {alpha} : f32 to {vtype}")
                    return k.op("v", f"arith.mulf {acc}, {alpha_v} : {vtype}")

                def accumulate(k: Kernel, row: str, column: str, width: int, acc: str) -> None:
                    vectors.store(
                        k,
                        acc,
                        scratch.acc,
                        scratch.acc_type,
                        f"{row}, {column}",
                        "f32",
                        lanes,
                        width,
                    )

                emit_matmul_nn(
                    k, p_rows, rows, v_rows, value_depth, cols, rescaled, accumulate, host
                )
            with k.loop(0, rows, 1) as out:
                total = k.op(
                    "s",
                    f"memref.load {scratch.stats}[{k.index(1)}, {out.iv}] : {scratch.stats_type}",
                )
                empty = k.op("s", f"arith.cmpf oeq, {total}, {k.f32(0.0)} : f32")
                total = k.op("s", f"arith.select {empty}, {k.f32(1.0)}, {total} : f32")
                total_v = k.op("v", f"vector.broadcast {total} : f32 to {vtype}")
                query = k.add(q0, out.iv)
                for c, w in vectors.chunks(value_depth, lanes):
                    column = k.index(c)
                    acc = vectors.load(
                        k, scratch.acc, scratch.acc_type, f"{out.iv}, {column}", "f32", lanes, w
                    )
                    value = k.op("v", f"arith.divf {acc}, {total_v} : {vtype}")
                    vectors.store(
                        k, value, "%o", types["o"], f"{b}, {h}, {query}, {column}", dtype, lanes, w
                    )
    return finish_range_core(k, host)


def wrapper_source(
    spec: AttentionSpec,
    symbol: str,
    q: ir.Value,
    kk: ir.Value,
    v: ir.Value,
    o: ir.Value,
    host: Host,
) -> str:
    dtype = spec.dtype
    k = Kernel(
        symbol,
        [("%q", str(q.type)), ("%k", str(kk.type)), ("%v", str(v.type))],
        results=[str(o.type)],
    )
    buffers = [
        buffer_of(k, "%q", shaped_dims(q.type), dtype, spec.q_view),
        buffer_of(k, "%k", shaped_dims(kk.type), dtype, spec.k_view),
        buffer_of(k, "%v", shaped_dims(v.type), dtype, spec.v_view),
    ]
    q_dims = dims_of(k, "%q", shaped_dims(q.type), dtype)
    sizes = [q_dims[0], q_dims[1], q_dims[2], k.index(spec.value_depth)]
    o_buffer = alloc(k, spec.o_view, dtype, sizes)
    types = [
        memref_type(view, dtype) for view in (spec.q_view, spec.k_view, spec.v_view, spec.o_view)
    ]
    pairs = k.mul(q_dims[0], spec.q_heads)
    k_dims = dims_of(k, "%k", shaped_dims(kk.type), dtype)
    work = k.mul(k.mul(k.mul(pairs, q_dims[2]), k_dims[2]), spec.depth + spec.value_depth)
    # Any split of the (batch, head) pairs works: threads only read k and v.
    launch(k, spec.symbol() + "_core", [*buffers, o_buffer], types, pairs, 1, work, host)
    return return_tensor(k, o_buffer, spec.o_view, dtype, o.type)


@rule("tessera.attention.flash")
def lower_flash_attention(op: ir.Operation, host: Host) -> None:
    view = FlashAttention(op)
    q, kk, v, o = view.q, view.k, view.v, view.o
    static_dims(op, q, [1, 3], "q")
    static_dims(op, kk, [1, 3], "k")
    static_dims(op, v, [1, 3], "v")
    block_q, block_k, _ = view.tile
    check(block_q > 0 and block_k > 0, op, f"tile sizes must be positive, found {view.tile}")
    check_unrolled(op, block_q, "the query tile")
    check_unrolled(op, block_k, "the key tile")
    spec = AttentionSpec(
        q_heads=static_dim(op, q, 1, "q"),
        kv_heads=static_dim(op, kk, 1, "k"),
        depth=static_dim(op, q, 3, "q", unrolled=True),
        value_depth=static_dim(op, v, 3, "v", unrolled=True),
        dtype=float_dtype(op, q, "q"),
        causal=bool(view.causal),
        scale=float(view.scale),
        softcap=float(view.softcap) if view.softcap is not None else None,
        window=int(view.window) if view.window is not None else None,
        block_q=int(block_q),
        block_k=int(block_k),
    )
    symbol = mangle(spec.symbol(), str(q.type), str(kk.type), str(v.type), str(o.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, q, kk, v, o, host)
    replace_with_call(op, symbol, source, [q, kk, v])
