"""A decode step's attention prologue in one launch: q's and k's per-head RMSNorm (Gemma 3's
q/k norm, where the model has it), their rotary embedding, q written out, and the new keys and
values written into their cache slots. Separately these are up to five launches
(``tessera.norm.rms`` twice, ``tessera.rope.apply`` twice, ``tessera.kv.append``).

Each row is one head of one token: a token's rows are q's ``Hq`` heads, then k's ``Hkv``, then
v's ``Hkv``, spread over lanes as a ``rms_norm.RowLayout`` (``prologue_layout``) whose halves
are whole rounds of lanes, so a lane holds each element's rotation partner itself and q may be
rotated in place. With norms it is exactly RMSNorm's layout of the head dim, so the sum of
squares is reduced in the same order and the norm rounds the same; the normed row is rounded
to the dtype (as the separate norm stores it) and rotated with the rope kernel's own
arithmetic (``rope.rotation``, ``rope.rotate``). The result equals the separate launches bit
for bit.

The cache writes are ``kv_append``'s: token s of sequence b has cache index
t = cache_index[b] + s and goes to slot t mod BS of block ``block_table[b, (t / BS) mod M]``;
only the last M·BS tokens of a call are written.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, math, memref, scf

from ..kernel import KernelInfo, KernelModule, Param
from .kv_append import cache_slot
from .rms_norm import (
    DTYPE_BYTES,
    FLOAT_DTYPES,
    SMALL_ROWS_BLOCK,
    PreNorm,
    RowLayout,
    all_of,
    chunk_column,
    constant,
    if_op,
    index,
    inverse_root,
    kernel_name,
    load_vector,
    narrow,
    row_layout,
    row_position,
    row_total,
    splat,
    store_vector,
    vector_lanes,
    vector_of,
    weighted,
    when,
    widen,
)
from .rope import RopeConfig, frequency_table, rope_layout, rotate, rotation


@dataclass(frozen=True)
class RopeAppendConfig:
    """Static facts: q's rope (dtype, q heads, head dim, theta, scaling, positions' type; k's
    rope is the same over ``heads_kv`` heads), the cache's kv heads and block size, the block
    table's element type, and the norms of q and k (None: the model has none)."""

    rope: RopeConfig
    heads_kv: int
    block_size: int
    table_dtype: str = "i64"
    q_norm: PreNorm | None = None
    k_norm: PreNorm | None = None

    @property
    def rows_per_token(self) -> int:
        return self.rope.heads + 2 * self.heads_kv


def prologue_layout(dtype: str, head_dim: int, normed: bool) -> RowLayout | None:
    """How a head's row spreads over lanes, each half whole rounds of them: RMSNorm's layout
    where its halves are (required with ``normed``, for the norm's order of summation), else
    vectors that stay inside a half over as many lanes (up to a warp) as divide them; None
    where there is no such layout."""
    size = DTYPE_BYTES[dtype]
    half = head_dim // 2
    norm = row_layout(head_dim, size)
    if head_dim % 2 == 0 and half % (norm.lanes * norm.threads) == 0:
        return norm
    if normed or head_dim % 2:
        return None
    lanes = vector_lanes(half, size)
    per_half = half // lanes
    threads = next(t for t in (32, 16, 8, 4, 2, 1) if per_half % t == 0)
    return RowLayout(head_dim, lanes, threads, 2 * per_half // threads, SMALL_ROWS_BLOCK // threads)


def rope_append_problem(dtype: str, head_dim: int, rotary: int, normed: bool) -> str | None:
    """Why the fused kernel cannot serve a head of ``head_dim`` (rope over ``rotary`` of it,
    ``normed`` first), or None."""
    if dtype not in FLOAT_DTYPES:
        return f"the fused rope and append takes bf16/f16/f32, got {dtype}"
    if rotary != head_dim:
        return "the fused rope and append rotates whole heads"
    if prologue_layout(dtype, head_dim, normed) is None:
        return f"a normed head of {head_dim} does not split into whole rounds of lanes per half"
    return None


def build_rope_append(km: KernelModule, cfg: RopeAppendConfig) -> KernelInfo:
    """Adds the kernel for ``cfg`` to ``km`` (once) and says how to launch it.

    Params: ``q`` [B, S, Hq, D], ``k`` [B, S, Hkv, D] (contiguous), ``v`` (strides ``v_sb``,
    ``v_sh``, ``v_ss`` of batch, head and token), the norms' weights ``q_norm_w`` and
    ``k_norm_w`` (where present), ``pos`` [B, S], ``q_out`` (q's layout; may be q),
    ``k_cache`` and ``v_cache`` [blocks, Hkv, BS, D], ``block_table`` [B, M],
    ``cache_index`` [B], ``B``, ``S`` (i32) and ``M``. Grid: a row per (token, head) as the
    row layout packs them."""
    rope = cfg.rope
    normed = cfg.q_norm is not None or cfg.k_norm is not None
    problem = rope_append_problem(rope.dtype, rope.head_dim, rope.rotary, normed)
    if problem is not None:
        raise ValueError(problem)
    dtype, head_dim = rope.dtype, rope.head_dim
    layout = prologue_layout(dtype, head_dim, normed)
    assert layout is not None
    norms = "_qknorm" if cfg.q_norm or cfg.k_norm else ""
    readable = (
        f"{dtype}_h{rope.heads}_{cfg.heads_kv}_d{head_dim}_bs{cfg.block_size}"
        f"_{cfg.table_dtype}{norms}"
    )
    name = kernel_name("rope_append", readable, cfg)
    params = (
        Param.buffer("q", dtype),
        Param.buffer("k", dtype),
        Param.buffer("v", dtype),
        *([Param.buffer("q_norm_w", cfg.q_norm.w_dtype)] if cfg.q_norm else []),
        *([Param.buffer("k_norm_w", cfg.k_norm.w_dtype)] if cfg.k_norm else []),
        Param.buffer("pos", rope.pos_dtype),
        Param.buffer("q_out", dtype),
        Param.buffer("k_cache", dtype),
        Param.buffer("v_cache", dtype),
        Param.buffer("block_table", cfg.table_dtype),
        Param.buffer("cache_index", "i64"),
        Param.scalar("v_sb", "i64"),
        Param.scalar("v_sh", "i64"),
        Param.scalar("v_ss", "i64"),
        Param.scalar("B", "i32"),
        Param.scalar("S", "i32"),
        Param.scalar("M", "i64"),
    )
    rows = f"B*S*{cfg.rows_per_token}"
    grid = rows if layout.rows_per_block == 1 else f"cdiv({rows}, {layout.rows_per_block})"
    info = KernelInfo(name, params, (grid, "1", "1"), (layout.block, 1, 1))
    if km.has_kernel(name):
        return info
    table = frequency_table(km, name, rope, rope_layout(rope))
    _, entry = km.add_kernel(name, params)
    with ir.InsertionPoint(entry):
        args = dict(zip((p.name for p in params), entry.arguments, strict=True))
        _Prologue(km, name, cfg, layout, table, args).emit()
        gpu.ReturnOp([])
    return info


def _i(value: ir.Value) -> ir.Value:
    """An integer scalar parameter as an index."""
    return arith.index_cast(ir.IndexType.get(), value)


def _lt(a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.cmpi(arith.CmpIPredicate.ult, a, b)


class _Prologue:
    """The kernel body: which row this thread serves, the row read into registers, its sum of
    squares, then one branch per kind of row."""

    def __init__(
        self,
        km: KernelModule,
        name: str,
        cfg: RopeAppendConfig,
        layout: RowLayout,
        table: str,
        args: dict[str, ir.Value],
    ) -> None:
        self.km, self.name, self.cfg, self.layout = km, name, cfg, layout
        self.table, self.args = table, args
        self.dtype, self.dim = cfg.rope.dtype, cfg.rope.head_dim

    def emit(self) -> None:
        cfg, args, layout = self.cfg, self.args, self.layout
        hq, hkv = cfg.rope.heads, cfg.heads_kv
        i32 = ir.IntegerType.get_signless(32)
        rows = arith.muli(arith.muli(args["B"], args["S"]), constant(i32, cfg.rows_per_token))
        where = row_position(layout, rows)
        self.lane, valid = where.lane, where.row_valid
        token = arith.divui(where.row, index(cfg.rows_per_token))
        slot = arith.remui(where.row, index(cfg.rows_per_token))
        seq = _i(args["S"])
        self.token, self.batch, self.step = token, arith.divui(token, seq), arith.remui(token, seq)
        is_q = _lt(slot, index(hq))
        is_kv = arith.cmpi(arith.CmpIPredicate.uge, slot, index(hq))
        is_k = arith.andi(is_kv, _lt(slot, index(hq + hkv)))
        is_v = arith.cmpi(arith.CmpIPredicate.uge, slot, index(hq + hkv))
        # Each kind's head (meaningful only in its own branch).
        q_head = slot
        k_head = arith.subi(slot, index(hq))
        v_head = arith.subi(slot, index(hq + hkv))
        q_row = arith.muli(arith.addi(arith.muli(token, index(hq)), q_head), index(self.dim))
        k_row = arith.muli(arith.addi(arith.muli(token, index(hkv)), k_head), index(self.dim))
        v_row = arith.addi(
            arith.addi(
                arith.muli(self.batch, _i(args["v_sb"])), arith.muli(v_head, _i(args["v_sh"]))
            ),
            arith.muli(self.step, _i(args["v_ss"])),
        )

        self.columns = [chunk_column(layout, self.lane, k) for k in range(layout.chunks)]
        zero = splat(0.0, layout.lanes)
        values, squares = [], zero
        for column in self.columns:

            def read(column: ir.Value = column) -> ir.Value:
                return self._read(is_q, is_k, (q_row, k_row, v_row), column)

            value = when(valid, read, zero)
            assert value is not None
            squares = math.fma(value, value, squares)
            values.append(value)
        # Every thread reduces (shuffles, maybe a barrier), whatever its row's kind.
        total = row_total(self.km, self.name, layout, squares) if cfg.q_norm or cfg.k_norm else None

        def rotate_q() -> None:
            rotated = self._rotated(values, total, cfg.q_norm, "q_norm_w")
            for value, column in zip(rotated, self.columns, strict=True):
                store_vector(value, args["q_out"], arith.addi(q_row, column), self.dtype)

        def append_k() -> None:
            rotated = self._rotated(values, total, cfg.k_norm, "k_norm_w")
            self._append("k_cache", k_head, rotated)

        def append_v() -> None:
            self._append("v_cache", v_head, [narrow(value, self.dtype) for value in values])

        when(all_of(valid, is_q), rotate_q)
        when(all_of(valid, is_k), append_k)
        when(all_of(valid, is_v), append_v)

    def _read(
        self,
        is_q: ir.Value,
        is_k: ir.Value,
        starts: tuple[ir.Value, ir.Value, ir.Value],
        column: ir.Value,
    ) -> ir.Value:
        """This lane's vector at ``column`` of its row, from q, k or v by the row's kind."""
        lanes, dtype = self.layout.lanes, self.dtype
        vtype = vector_of(lanes, dtype)

        def load(buffer: str, start: ir.Value) -> ir.Value:
            return load_vector(self.args[buffer], arith.addi(start, column), lanes, dtype)

        outer = if_op(is_q, [vtype])
        with ir.InsertionPoint(outer.then_block):
            scf.YieldOp([load("q", starts[0])])
        with ir.InsertionPoint(outer.else_block):
            inner = if_op(is_k, [vtype])
            with ir.InsertionPoint(inner.then_block):
                scf.YieldOp([load("k", starts[1])])
            with ir.InsertionPoint(inner.else_block):
                scf.YieldOp([load("v", starts[2])])
            scf.YieldOp([inner.results[0]])
        return widen(outer.results[0], dtype)

    def _rotated(
        self,
        values: list[ir.Value],
        total: ir.Value | None,
        norm: PreNorm | None,
        weight: str,
    ) -> list[ir.Value]:
        """The row (f32 vectors) normed (where ``norm``) and rounded as the norm stores it,
        then rotated: vectors in the dtype, in the order of ``self.columns``."""
        cfg, dtype = self.cfg, self.dtype
        if norm is not None:
            assert total is not None
            scale = inverse_root(self.km, total, self.layout, self.dim, norm.eps)
            w = self.args[weight]
            values = [
                widen(narrow(weighted(v, scale, w, c, norm.offset, norm.w_dtype), dtype), dtype)
                for v, c in zip(values, self.columns, strict=True)
            ]
        # Chunk j of the first half pairs with chunk j + shift of the second.
        shift = len(values) // 2
        position = memref.load(self.args["pos"], [self.token])
        out: list[ir.Value | None] = [None] * len(values)
        for j in range(shift):
            cos, sin = rotation(cfg.rope, self.table, self.columns[j], self.layout.lanes, position)
            out[j], out[j + shift] = rotate(values[j], values[j + shift], cos, sin, dtype)
        return [value for value in out if value is not None]

    def _append(self, cache: str, head: ir.Value, values: list[ir.Value]) -> None:
        """Stores this row (vectors in the dtype) into its cache slot, if its token is among
        the last M·BS of the call."""
        cfg, args = self.cfg, self.args
        width = _i(args["M"])
        seq = _i(args["S"])
        ring = arith.muli(width, index(cfg.block_size))
        kept = arith.cmpi(arith.CmpIPredicate.sge, arith.addi(self.step, ring), seq)

        def store() -> None:
            slot = cache_slot(
                args, self.batch, self.step, width, head, cfg.heads_kv, cfg.block_size
            )
            start = arith.muli(slot, index(self.dim))
            for value, column in zip(values, self.columns, strict=True):
                store_vector(value, args[cache], arith.addi(start, column), self.dtype)

        when(kept, store)
