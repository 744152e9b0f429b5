"""The bf16/f16 flash-attention kernel on the tensor cores (mma.sync m16n8k16, sm_80 and up).

One block computes ``block_m`` queries of one (batch, head); each warp owns 16·m of them (m
row tiles, each K and V fragment it loads serving all m). The block copies its Q tile to
shared memory once (cp.async), then walks the key tiles of
``block_n`` keys that hold at least one key visible to some of its queries (the causal and
window bounds are computed per query tile, so fully masked tiles are never visited):

    copy K_j, V_j to shared memory (cp.async)      — the loop marked ``tessera.pipeline``
    S = Q·K_jᵀ                                      ldmatrix + mma.sync, f32 accumulators
    S → raw scores (softcap), mask (straddling tiles only), online softmax (exp2)
    O = α·O + P·V_j                                 P packed from S's registers, V via
                                                    ldmatrix.trans
and finally writes O / l, rounded once to the dtype. The loop is emitted in the canonical form
of ``tessera-schedule-async-copies`` (copies, commit, wait, barrier, compute, barrier), which
turns it into a multi-stage pipeline when ``cfg.stages > 1``.

Per thread, with D = 256: the O accumulator is 128 f32 registers, the scores 32; Q fragments
are reloaded from shared memory at each step unless ``cfg.q_in_registers`` (small D).

The query heads of one kv head are different blocks; the grid order (``attention.grid``)
runs them side by side, so their K/V tiles come from L2 rather than HBM after the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, nvgpu, scf, vector

from ..kernel import KernelModule
from ..pipeline_smem import SMEM_ATTR
from ..schedule_async_copies import Options, schedule_async_copies
from . import attention_ir as a
from .attention import AttentionConfig, copy_elements, padded, tile_bytes, typed_params
from .attention_softmax import (
    NEG_INF,
    MaskFrame,
    RowState,
    mask_scores,
    pack_probabilities,
    quad_sum,
    raw_scores,
    rescale,
    softmax_step,
)
from .attention_tiles import Lanes, TileCopy, lanes, ldmatrix, mma, tile_view, workgroup


@dataclass
class _Frame:
    """Values computed once per block and used throughout."""

    ln: Lanes
    q0: ir.Value  # first query of the tile (index)
    warp_row: ir.Value  # first row of this warp's rows within the tile
    rows_end: ir.Value  # min(q0 + block_m, S)
    offset: ir.Value  # T - S
    seq_q: ir.Value  # S (index)
    seq_k: ir.Value  # T (index)
    bases: dict[str, ir.Value]  # element offset of (b, head) in q, k, v, o
    strides: dict[str, ir.Value]  # sequence stride of q, k, v, o (index)
    buffers: dict[str, ir.Value]
    tiles: dict[str, ir.Value]  # shared views: q, k, v


Fragments = list[list[ir.Value]]  # per 8-column n-tile, the four f32 of a C fragment


class _MmaKernel:
    def __init__(self, cfg: AttentionConfig, args: dict[str, ir.Value]) -> None:
        self.cfg = cfg
        self.args = args
        self.dtype = cfg.dtype
        self.warps = cfg.warps
        self.m_tiles = cfg.block_m // (16 * cfg.warps)  # 16-row tiles per warp
        self.threads = self.warps * 32
        self.dp = padded(cfg.head_dim)
        self.dvp = padded(cfg.dv)
        self.q_bytes = _aligned(tile_bytes(cfg.block_m, cfg.head_dim))
        self.k_bytes = _aligned(tile_bytes(cfg.block_n, cfg.head_dim))
        self.v_bytes = _aligned(tile_bytes(cfg.block_n, cfg.dv))

    @property
    def smem_bytes(self) -> int:
        return self.q_bytes + self.k_bytes + self.v_bytes

    # -- setup ---------------------------------------------------------------------------------

    def frame(self) -> _Frame:
        cfg, args = self.cfg, self.args
        tid = gpu.thread_id(gpu.Dimension.x)
        bh = gpu.block_id(gpu.Dimension.x)
        batch = a.div(bh, cfg.heads_q)
        head = a.rem(bh, cfg.heads_q)
        kv_head = a.div(head, cfg.group)
        tile = gpu.block_id(gpu.Dimension.y)
        if cfg.causal:
            tile = a.sub(a.sub(gpu.grid_dim(gpu.Dimension.y), 1), tile)
        q0 = a.mul(tile, cfg.block_m)
        seq_q = a.to_index(args["S"])
        seq_k = a.to_index(args["T"])

        def base(t: str, h: ir.Value) -> ir.Value:
            sb, sh = a.to_index(args[f"{t}_sb"]), a.to_index(args[f"{t}_sh"])
            return a.add(a.mul(batch, sb), a.mul(h, sh))

        smem = gpu.dynamic_shared_memory(
            ir.MemRefType.get(
                [ir.ShapedType.get_dynamic_size()],
                ir.IntegerType.get_signless(8),
                memory_space=workgroup(),
            )
        )
        ln = lanes(tid)
        return _Frame(
            ln=ln,
            q0=q0,
            warp_row=a.mul(ln.warp, 16 * self.m_tiles),
            rows_end=a.smin(a.add(q0, cfg.block_m), seq_q),
            offset=a.sub(seq_k, seq_q),
            seq_q=seq_q,
            seq_k=seq_k,
            bases={
                "q": base("q", head),
                "k": base("k", kv_head),
                "v": base("v", kv_head),
                "o": base("o", head),
            },
            strides={t: a.to_index(args[f"{t}_ss"]) for t in "qkvo"},
            buffers={t: args[t] for t in "qkvo"},
            tiles=self.shared_tiles(smem),
        )

    def shared_tiles(self, smem: ir.Value) -> dict[str, ir.Value]:
        """The shared-memory views the kernel reads: the padded Q, K and V tiles."""
        cfg = self.cfg
        element = a.half_type(self.dtype)
        return {
            "q": tile_view(smem, 0, cfg.block_m, cfg.head_dim, element),
            "k": tile_view(smem, self.q_bytes, cfg.block_n, cfg.head_dim, element),
            "v": tile_view(smem, self.q_bytes + self.k_bytes, cfg.block_n, cfg.dv, element),
        }

    def key_tiles(self, fr: _Frame) -> tuple[ir.Value, ir.Value]:
        """[first, end) of the key tiles holding a key visible to some query of the tile."""
        cfg = self.cfg
        end_key = fr.seq_k
        if cfg.causal:
            # The tile's last real query sees keys up to rows_end - 1 + T - S.
            end_key = a.smin(a.smax(a.add(fr.rows_end, fr.offset), 0), fr.seq_k)
        first_key: ir.Value | int = 0
        if cfg.window is not None:
            # Its first query sees keys from q0 + T - S - w + 1 on.
            lowest = a.add(a.add(fr.q0, fr.offset), 1 - cfg.window)
            first_key = a.smin(a.smax(lowest, 0), fr.seq_k)
        first = a.idx(0) if isinstance(first_key, int) else a.div(first_key, cfg.block_n)
        return first, a.ceildiv(end_key, cfg.block_n)

    def needs_mask(self, fr: _Frame, k0: ir.Value) -> ir.Value:
        """Whether key tile [k0, k0 + block_n) hides some key from some real query: it runs
        past T, or past the diagonal of the tile's first query, or below the window of its
        last query."""
        cfg = self.cfg
        k_end = a.add(k0, cfg.block_n)
        needs = a.cmp("sgt", k_end, fr.seq_k)
        if cfg.causal:
            needs = a.either(needs, a.cmp("sgt", a.sub(k_end, 1), a.add(fr.q0, fr.offset)))
        if cfg.window is not None:
            lowest_last = a.add(a.add(a.sub(fr.rows_end, 1), fr.offset), 1 - cfg.window)
            needs = a.either(needs, a.cmp("slt", k0, lowest_last))
        return needs

    # -- the two products ---------------------------------------------------------------------

    def q_fragment(
        self, fr: _Frame, m: int, step: int, at: tuple[ir.Value, ir.Value] | None = None
    ) -> list[ir.Value]:
        """The A operand of row tile m, k step ``step``; ``at`` is this lane's (row, col)
        of the warp's first fragment, when given."""
        row, col = at or (a.add(fr.warp_row, fr.ln.a_row), fr.ln.a_col)
        return ldmatrix(self.dtype, fr.tiles["q"], a.add(row, 16 * m), a.add(col, 16 * step), False)

    def scores(self, fr: _Frame, q_regs: list[list[list[ir.Value]]] | None) -> list[Fragments]:
        """S = Q·K_jᵀ for each of the warp's 16-row tiles: block_n / 8 C fragments each. A K
        fragment is loaded once and used by every row tile."""
        zero = a.f32(0.0)
        s = [[[zero] * 4 for _ in range(self.cfg.block_n // 8)] for _ in range(self.m_tiles)]
        at = None
        if q_regs is None:
            at = (a.opaque(a.add(fr.warp_row, fr.ln.a_row)), a.opaque(fr.ln.a_col))
        for step in range(self.dp // 16):
            qa = [
                q_regs[m][step] if q_regs is not None else self.q_fragment(fr, m, step, at)
                for m in range(self.m_tiles)
            ]
            for pair in range(self.cfg.block_n // 16):
                kb = ldmatrix(
                    self.dtype,
                    fr.tiles["k"],
                    a.add(fr.ln.b_row, 16 * pair),
                    a.add(fr.ln.b_col, 16 * step),
                    False,
                )
                for m in range(self.m_tiles):
                    s[m][2 * pair] = mma(self.dtype, qa[m], kb[0:2], s[m][2 * pair])
                    s[m][2 * pair + 1] = mma(self.dtype, qa[m], kb[2:4], s[m][2 * pair + 1])
        return s

    def accumulate(
        self, fr: _Frame, acc: list[Fragments], pa: list[list[list[ir.Value]]]
    ) -> list[Fragments]:
        """O += P·V_j, V's B operands read transposed (ldmatrix.trans) from its row-major
        tile, each used by every row tile."""
        acc = [[list(t) for t in tiles] for tiles in acc]
        for kk in range(self.cfg.block_n // 16):
            for pair in range(self.dvp // 16):
                vb = ldmatrix(
                    self.dtype,
                    fr.tiles["v"],
                    a.add(fr.ln.t_row, 16 * kk),
                    a.add(fr.ln.t_col, 16 * pair),
                    True,
                )
                for m in range(self.m_tiles):
                    operand = pa[m][kk]
                    acc[m][2 * pair] = mma(self.dtype, operand, vb[0:2], acc[m][2 * pair])
                    acc[m][2 * pair + 1] = mma(self.dtype, operand, vb[2:4], acc[m][2 * pair + 1])
        return acc

    # -- the pieces of the kernel ---------------------------------------------------------------

    def load_q(self, fr: _Frame) -> list[list[list[ir.Value]]] | None:
        cfg = self.cfg
        copy = TileCopy(
            cfg.block_m, cfg.head_dim, copy_elements(cfg.head_dim, cfg.dtype), self.threads
        )
        tokens = copy.issue(
            copy.thread_pieces(fr.ln.tid),
            fr.tiles["q"],
            fr.buffers["q"],
            fr.bases["q"],
            fr.q0,
            fr.strides["q"],
            fr.seq_q,
        )
        group = nvgpu.device_async_create_group(tokens)
        nvgpu.device_async_wait(group, num_groups=0)
        gpu.barrier()
        if not cfg.q_in_registers:
            return None
        return [
            [self.q_fragment(fr, m, step) for step in range(self.dp // 16)]
            for m in range(self.m_tiles)
        ]

    def row(self, fr: _Frame, m: int, half: int) -> ir.Value:
        """The query of this lane's C-fragment row ``half`` (g or g + 8) in row tile m."""
        return a.add(a.add(fr.q0, fr.warp_row), a.add(fr.ln.g, 16 * m + 8 * half))

    def mask_frame(self, fr: _Frame, k0: ir.Value, m: int) -> MaskFrame:
        last = a.to_i32(a.add(self.row(fr, m, 0), fr.offset))
        return MaskFrame(
            key0=a.to_i32(a.add(k0, a.mul(fr.ln.q, 2))),
            last_key=(last, a.add(last, 8)),
            keys=a.to_i32(fr.seq_k),
        )

    def main_loop(
        self, fr: _Frame, q_regs: list[list[list[ir.Value]]] | None
    ) -> tuple[list[Fragments], list[RowState]]:
        cfg = self.cfg
        n_acc = self.dvp // 8
        first, end = self.key_tiles(fr)
        zero, minus_inf = a.f32(0.0), a.f32(NEG_INF)
        init = [zero] * (4 * n_acc * self.m_tiles) + [
            minus_inf,
            minus_inf,
            zero,
            zero,
        ] * self.m_tiles
        k_copy = TileCopy(
            cfg.block_n, cfg.head_dim, copy_elements(cfg.head_dim, cfg.dtype), self.threads
        )
        v_copy = TileCopy(cfg.block_n, cfg.dv, copy_elements(cfg.dv, cfg.dtype), self.threads)
        k_pieces = k_copy.thread_pieces(fr.ln.tid)
        v_pieces = v_copy.thread_pieces(fr.ln.tid)
        loop = a.for_op(first, end, init)
        loop.attributes["tessera.pipeline"] = ir.UnitAttr.get()
        with ir.InsertionPoint(loop.body):
            acc, states = self._unpack(list(loop.inner_iter_args), n_acc)
            k0 = a.mul(loop.induction_variable, cfg.block_n)
            tokens = k_copy.issue(
                k_pieces,
                fr.tiles["k"],
                fr.buffers["k"],
                fr.bases["k"],
                k0,
                fr.strides["k"],
                fr.seq_k,
            )
            tokens += v_copy.issue(
                v_pieces,
                fr.tiles["v"],
                fr.buffers["v"],
                fr.bases["v"],
                k0,
                fr.strides["v"],
                fr.seq_k,
            )
            group = nvgpu.device_async_create_group(tokens)
            nvgpu.device_async_wait(group, num_groups=0)
            gpu.barrier()
            r = self._masked(fr, k0, [raw_scores(cfg, s) for s in self.scores(fr, q_regs)])
            packed = []
            for m in range(self.m_tiles):
                p, alpha, states[m] = softmax_step(cfg, r[m], states[m])
                acc[m] = rescale(acc[m], alpha)
                packed.append(pack_probabilities(self.dtype, p))
            acc = self.accumulate(fr, acc, packed)
            gpu.barrier()
            scf.yield_(self._pack(acc, states))
        return self._unpack(list(loop.results), n_acc)

    @staticmethod
    def _pack(acc: list[Fragments], states: list[RowState]) -> list[ir.Value]:
        flat = [x for tiles in acc for t in tiles for x in t]
        for state in states:
            flat += [*state.m, *state.l]
        return flat

    def _unpack(self, flat: list[ir.Value], n_acc: int) -> tuple[list[Fragments], list[RowState]]:
        per = 4 * n_acc
        acc = [
            [flat[m * per + 4 * t : m * per + 4 * t + 4] for t in range(n_acc)]
            for m in range(self.m_tiles)
        ]
        rest = flat[self.m_tiles * per :]
        states = [
            RowState((rest[4 * m], rest[4 * m + 1]), (rest[4 * m + 2], rest[4 * m + 3]))
            for m in range(self.m_tiles)
        ]
        return acc, states

    def _masked(self, fr: _Frame, k0: ir.Value, r: list[Fragments]) -> list[Fragments]:
        """r masked when the tile straddles a mask edge (a uniform branch per tile)."""
        flat = [x for tiles in r for t in tiles for x in t]
        branch = a.if_op(self.needs_mask(fr, k0), [x.type for x in flat])
        with ir.InsertionPoint(branch.then_block):
            masked = [
                mask_scores(self.cfg, r[m], self.mask_frame(fr, k0, m)) for m in range(self.m_tiles)
            ]
            scf.yield_([x for tiles in masked for t in tiles for x in t])
        with ir.InsertionPoint(branch.else_block):
            scf.yield_(flat)
        out = list(branch.results)
        n = len(r[0])
        return [
            [out[(m * n + t) * 4 : (m * n + t) * 4 + 4] for t in range(n)]
            for m in range(self.m_tiles)
        ]

    def store(self, fr: _Frame, acc: list[Fragments], states: list[RowState]) -> None:
        """O / l rounded to the dtype, two adjacent columns per store; rows past S and columns
        past Dv are not written. A row that saw no key (l = 0) writes zeros."""
        for m in range(self.m_tiles):
            for half in range(2):
                self._store_row(fr, acc[m], states[m].l[half], self.row(fr, m, half), half)

    def _store_row(
        self, fr: _Frame, acc: Fragments, partial: ir.Value, row: ir.Value, half: int
    ) -> None:
        cfg = self.cfg
        pair_type = ir.VectorType.get([2], a.half_type(self.dtype))
        total = quad_sum(partial)
        inverse = a.select(a.fcmp("ogt", total, 0.0), a.fdiv(1.0, total), 0.0)
        inside = a.if_op(a.cmp("slt", row, fr.seq_q))
        with ir.InsertionPoint(inside.then_block):
            start = a.add(fr.bases["o"], a.mul(row, fr.strides["o"]))
            for t, tile in enumerate(acc):
                col = a.add(a.mul(fr.ln.q, 2), 8 * t)
                lo = a.fmul(tile[2 * half], inverse)
                hi = a.fmul(tile[2 * half + 1], inverse)
                pair = _round_pair(lo, hi, pair_type)
                if 8 * t + 8 <= cfg.dv:
                    vector.store(pair, fr.buffers["o"], [a.add(start, col)], alignment=4)
                    continue
                edge = a.if_op(a.cmp("slt", col, cfg.dv))
                with ir.InsertionPoint(edge.then_block):
                    vector.store(pair, fr.buffers["o"], [a.add(start, col)], alignment=4)
                    scf.yield_([])
            scf.yield_([])


def _round_pair(lo: ir.Value, hi: ir.Value, pair_type: ir.Type) -> ir.Value:
    both = vector.from_elements(ir.VectorType.get([2], a.f32_type()), [lo, hi])
    return arith.truncf(pair_type, both)


def _aligned(n: int, to: int = 128) -> int:
    return -(-n // to) * to


def emit_mma_kernel(km: KernelModule, cfg: AttentionConfig, name: str) -> tuple[int, int]:
    """Adds the kernel; returns (threads per block, dynamic shared memory bytes)."""
    kernel = _MmaKernel(cfg, {})
    params = typed_params(cfg.dtype)
    fn, block = km.add_kernel(name, params)
    fn.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([kernel.threads, 1, 1])
    if cfg.blocks_per_sm:
        i32 = ir.IntegerType.get_signless(32)
        fn.attributes["nvvm.minctasm"] = ir.IntegerAttr.get(i32, cfg.blocks_per_sm)
    kernel.args = {p.name: v for p, v in zip(params, block.arguments, strict=True)}
    with ir.InsertionPoint(block):
        fr = kernel.frame()
        q_regs = kernel.load_q(fr)
        acc, states = kernel.main_loop(fr, q_regs)
        kernel.store(fr, acc, states)
        gpu.ReturnOp([])
    i64 = ir.IntegerType.get_signless(64)
    fn.attributes[SMEM_ATTR] = ir.IntegerAttr.get(i64, kernel.smem_bytes)
    # The pass multi-buffers the K/V tiles of the marked loop (this kernel's only one) and
    # records the grown shared-memory size.
    schedule_async_copies(fn.operation, Options(stages=cfg.stages))
    return kernel.threads, ir.IntegerAttr(fn.attributes[SMEM_ATTR]).value
