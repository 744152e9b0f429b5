"""The bf16/f16 flash-attention kernel for Hopper (sm_90a): warpgroup MMAs (wgmma) on
128-byte-swizzled shared tiles.

A block of ``block_m / 64`` warpgroups computes ``block_m`` queries of one (batch, head);
warpgroup w owns queries 64w..64w+63, its warp i rows 16i..16i+15 of those. Per key tile of
``block_n`` keys, each warpgroup runs

    S = Q·K_jᵀ    wgmma.m64n{block_n}k16, A (its 64 query rows) and B (the key rows) both
                  read from shared memory through matrix descriptors, K-major
    softmax       on S's registers: the accumulator of warp i is the mma.sync C layout of
                  its 16 rows, so the online softmax, the mask and the softcap are the
                  tensor-core kernel's own (``attention_softmax``)
    O = α·O + P·V_j   wgmma.m64n{Dv}k16 with A = P straight from the registers (the C layout
                  of two adjacent 8-key groups is the A layout of one k step) and B = V_j
                  from shared memory, N-major (V's rows are keys, contiguous along Dv)

The two warpgroups of a block interleave on their own: while one works through its softmax,
the other's wgmmas keep the tensor cores busy. A schedule that also overlapped within each
warpgroup (S_j issued with the previous tile's P·V, tile j's softmax running while P·V is in
flight) measured slower on an H100 (368 against 404 TF/s at B1 H8 S4096 D256 causal, each
next to the mma.sync kernel's 269 in its run: its registers filled to 250-255 a thread), so
this kernel keeps one wgmma group in flight.

**Shared layout.** A [rows, D] tile is stored as D/64 column chunks of [rows, 64]: each row
of a chunk is 128 bytes, and its 16-byte unit u sits at unit ``u xor (row mod 8)`` (the
128-byte swizzle, which wgmma undoes from the address bits; every chunk starts on a
1024-byte boundary). For the K-major operands (Q, K) a descriptor's stride is the 1024
bytes between 8-row groups and a k step of 16 moves its start 32 bytes; for the N-major V
the leading offset is the distance between chunks (block_n · 128 bytes), the stride again
1024 bytes, and a k step of 16 keys moves the start 16 rows (2048 bytes).

**Copies.** Global → shared by cp.async, 16 bytes per thread and copy, written at the
swizzled place. Tiles are double-buffered by hand (``stages``
K/V buffers, the copies of tile j + stages - 1 issued while tile j is computed); after a
wait, each thread fences its copies to the async proxy (``fence.proxy.async``) before the
barrier, as wgmma reads shared memory through that proxy. Rows past the sequence's end are
zero-filled by the copies.

D and Dv must be multiples of 64 up to 256 (wgmma's widest n for the P·V product); other
shapes keep the mma.sync kernel.
"""

from __future__ import annotations

from dataclasses import replace

from mlir import ir
from mlir.dialects import arith, gpu, llvm, memref, nvgpu, nvvm, scf

from ..kernel import KernelModule
from . import attention_ir as a
from .attention import AttentionConfig, smem_limit, typed_params
from .attention_mma import Fragments, _Frame, _MmaKernel
from .attention_softmax import (
    NEG_INF,
    RowState,
    pack_probabilities,
    raw_scores,
    rescale,
    softmax_step,
)
from .wgmma_ir import (
    K_STEP,
    SWIZZLE_BYTES,
    WGMMA_M,
    descriptor,
    f32_struct,
    i64,
    swizzle_aligned,
    wgmma,
)

WARPGROUP = 128
CHUNK = 64  # elements of a 128-byte swizzled row
ROW_BYTES = 128
COPY_BYTES = 16


def wgmma_shape(cfg: AttentionConfig) -> bool:
    """Whether the Hopper kernel takes ``cfg``: bf16/f16, D and Dv multiples of 64 up to 256."""
    return cfg.dtype in ("bf16", "f16") and all(
        dim % CHUNK == 0 and dim <= 256 for dim in (cfg.head_dim, cfg.dv)
    )


def shared_bytes(cfg: AttentionConfig) -> int:
    """The Q tile, ``stages`` K/V tiles and the alignment slack."""
    q = cfg.block_m * cfg.head_dim * 2
    kv = cfg.block_n * (cfg.head_dim + cfg.dv) * 2
    return q + cfg.stages * kv + SWIZZLE_BYTES


def resolve_wgmma(cfg: AttentionConfig, arch: str) -> AttentionConfig:
    """``cfg`` with its tile fields chosen: two warpgroups (128 queries), for D or Dv above
    128 (the O accumulator then takes 128 registers a thread) 80 keys per tile in the
    warp-specialized form (its compute warpgroups have 240 registers each) and 64 in the
    plain one, 128 keys below; two K/V stages."""
    cfg.validate()
    block_m = cfg.block_m or 2 * WGMMA_M
    wide = 80 if cfg.warp_specialized else 64
    block_n = cfg.block_n or (wide if max(cfg.head_dim, cfg.dv) > 128 else 128)
    resolved = replace(
        cfg,
        block_m=block_m,
        block_n=block_n,
        warps=block_m // 16,
        stages=cfg.stages or 2,
        q_in_registers=False,
    )
    if block_m % WGMMA_M or not 16 <= block_n <= 256:
        raise ValueError(
            f"the wgmma attention kernel takes block_m a multiple of {WGMMA_M} and block_n "
            f"from 16 to 256, got {block_m} and {block_n}"
        )
    if cfg.warps and cfg.warps != block_m // 16:
        raise ValueError(f"the wgmma attention kernel runs {block_m // 16} warps, not {cfg.warps}")
    need, limit = shared_bytes(resolved), smem_limit(arch)
    if need > limit:
        raise ValueError(
            f"{resolved.stages} K/V stage(s) of {block_n} keys next to {block_m} queries at "
            f"D={cfg.head_dim} need {need} bytes of shared memory; {arch} allows {limit}"
        )
    resolved.validate()
    return resolved


def _advance(descriptor: ir.Value, offset: int) -> ir.Value:
    """The descriptor of the tile ``offset`` bytes further on (a multiple of 16)."""
    if not offset:
        return descriptor
    return arith.addi(descriptor, a.const(offset >> 4, ir.IntegerType.get_signless(64)))


class _WgmmaKernel(_MmaKernel):
    def __init__(self, cfg: AttentionConfig, args: dict[str, ir.Value]) -> None:
        super().__init__(cfg, args)
        self.q_bytes = cfg.block_m * cfg.head_dim * 2
        self.k_bytes = cfg.block_n * cfg.head_dim * 2
        self.v_bytes = cfg.block_n * cfg.dv * 2
        self.kv_bytes = self.k_bytes + self.v_bytes

    @property
    def smem_bytes(self) -> int:
        return shared_bytes(self.cfg)

    def shared_tiles(self, smem: ir.Value) -> dict[str, ir.Value]:
        """One flat element view of the tiles, starting at the first 1024-byte boundary of
        the dynamic shared memory ("flat"), and that boundary's address ("address", i64)."""
        _, aligned, shift = swizzle_aligned(smem)
        elements = (self.smem_bytes - SWIZZLE_BYTES) // 2
        flat = memref.view(
            ir.MemRefType.get(
                [ir.ShapedType.get_dynamic_size()],
                a.half_type(self.dtype),
                memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"),
            ),
            smem,
            shift,
            [a.idx(elements)],
        )
        return {"flat": flat, "address": aligned}

    # -- copies ---------------------------------------------------------------------------------

    def copy_tile(
        self,
        fr: _Frame,
        tensor: str,
        at: ir.Value,
        rows: int,
        dim: int,
        first_row: ir.Value,
        limit: ir.Value,
        copiers: tuple[ir.Value, int] | None = None,
    ) -> list[ir.Value]:
        """cp.async of rows first_row.. first_row + rows - 1 of ``tensor`` into the swizzled
        tile at element offset ``at`` of the flat view; rows at or past ``limit`` are
        zero-filled (their source clamped to the last row, of which no byte is read).
        ``copiers`` = (this thread's index among them, their count): the block's compute
        threads by default. A producer warpgroup's copiers work out the addresses per call
        (their index is opaque to the compiler): hoisted out of its loop, as they otherwise
        are, they would not fit the producer's few registers."""
        unit, row, within, chunk_at, step = self.copy_layout(fr, at, rows, dim, copiers)
        column = a.mul(unit, 8)
        stride = fr.strides[tensor]
        last = a.smax(a.sub(limit, 1), 0)
        tokens = []
        for turn in range(rows // step):
            tile_row = a.add(row, turn * step)
            # With a step that is a multiple of 8 the swizzle is the same every turn.
            swizzled = a.mul(arith.xori(within, a.rem(tile_row, 8)), 8)
            source_row = a.add(first_row, tile_row)
            valid = a.cmp("slt", source_row, limit)
            index = a.add(a.add(fr.bases[tensor], a.mul(a.smin(source_row, last), stride)), column)
            tokens.append(
                nvgpu.device_async_copy(
                    fr.tiles["flat"],
                    [a.add(chunk_at, a.add(a.mul(tile_row, CHUNK), swizzled))],
                    fr.buffers[tensor],
                    [index],
                    ir.IntegerAttr.get(a.index_type(), 8),
                    src_elements=a.select(valid, a.idx(8), 0),
                    bypass_l1=True,
                )
            )
        return tokens

    def copy_layout(
        self,
        fr: _Frame,
        at: ir.Value,
        rows: int,
        dim: int,
        copiers: tuple[ir.Value, int] | None,
    ) -> tuple[ir.Value, ir.Value, ir.Value, ir.Value, int]:
        """This thread's place in the copies of a [rows, dim] tile at element offset ``at``
        (``copy_tile``'s ``copiers``): its 16-byte unit of a row, its first row, that unit
        within its 128-byte chunk, the chunk's element offset, and the rows between turns."""
        tid, threads = copiers or (fr.ln.tid, self.threads)
        tid = _opaque(tid) if copiers else tid
        units = dim * 2 // COPY_BYTES  # 16-byte units per row
        step = threads // units  # rows per turn
        assert rows % step == 0, (rows, dim)
        unit, row = a.rem(tid, units), a.div(tid, units)
        chunk, within = a.div(unit, 8), a.rem(unit, 8)
        return unit, row, within, a.add(at, a.mul(chunk, rows * CHUNK)), step

    def issue_kv(
        self,
        fr: _Frame,
        tile: ir.Value,
        stage: ir.Value,
        end: ir.Value,
        copiers: tuple[ir.Value, int] | None = None,
    ) -> ir.Value:
        """The copies of key tile ``tile`` into ``stage``, committed as one group; a tile at
        or past ``end`` copies nothing (zero-size copies keep one group per iteration)."""
        cfg = self.cfg
        k0 = a.mul(tile, cfg.block_n)
        limit = a.select(a.cmp("slt", tile, end), fr.seq_k, 0)
        at = a.add(self.q_bytes // 2, a.mul(stage, self.kv_bytes // 2))
        v_at = a.add(at, self.k_bytes // 2)
        if copiers is None:
            tokens = self.copy_tile(fr, "k", at, cfg.block_n, cfg.head_dim, k0, limit)
            tokens += self.copy_tile(fr, "v", v_at, cfg.block_n, cfg.dv, k0, limit)
            return nvgpu.device_async_create_group(tokens)
        # A producer copies a tile that lies wholly before the keys' end row by row from one
        # address, one stride further each turn; only the last tile clamps each row.
        group = ir.Type.parse("!nvgpu.device.async.token")
        inside = a.if_op(a.cmp("sle", a.add(k0, cfg.block_n), limit), [group])
        with ir.InsertionPoint(inside.then_block):
            tokens = self.copy_rows(fr, "k", at, cfg.block_n, cfg.head_dim, k0, copiers)
            tokens += self.copy_rows(fr, "v", v_at, cfg.block_n, cfg.dv, k0, copiers)
            scf.yield_([nvgpu.device_async_create_group(tokens)])
        with ir.InsertionPoint(inside.else_block):
            tokens = self.copy_tile(fr, "k", at, cfg.block_n, cfg.head_dim, k0, limit, copiers)
            tokens += self.copy_tile(fr, "v", v_at, cfg.block_n, cfg.dv, k0, limit, copiers)
            scf.yield_([nvgpu.device_async_create_group(tokens)])
        return inside.results[0]

    def copy_rows(
        self,
        fr: _Frame,
        tensor: str,
        at: ir.Value,
        rows: int,
        dim: int,
        first_row: ir.Value,
        copiers: tuple[ir.Value, int],
    ) -> list[ir.Value]:
        """``copy_tile`` for rows that all exist: no clamp, no zero fill."""
        unit, row, within, chunk_at, step = self.copy_layout(fr, at, rows, dim, copiers)
        stride = fr.strides[tensor]
        start = a.add(fr.bases[tensor], a.mul(a.add(first_row, row), stride))
        start = a.add(start, a.mul(unit, 8))
        jump = a.mul(stride, step)
        tokens = []
        for turn in range(rows // step):
            tile_row = a.add(row, turn * step)
            swizzled = a.mul(arith.xori(within, a.rem(tile_row, 8)), 8)
            tokens.append(
                nvgpu.device_async_copy(
                    fr.tiles["flat"],
                    [a.add(chunk_at, a.add(a.mul(tile_row, CHUNK), swizzled))],
                    fr.buffers[tensor],
                    [a.add(start, a.mul(jump, turn))],
                    ir.IntegerAttr.get(a.index_type(), 8),
                    bypass_l1=True,
                )
            )
        return tokens

    @staticmethod
    def visible_to_wgmma() -> None:
        """Makes this thread's landed copies visible to the async proxy, then to the block."""
        nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
        gpu.barrier()

    def copy_q(self, fr: _Frame) -> None:
        """This thread's copies of the Q tile, landed and fenced to the async proxy."""
        cfg = self.cfg
        tokens = self.copy_tile(fr, "q", a.idx(0), cfg.block_m, cfg.head_dim, fr.q0, fr.seq_q)
        group = nvgpu.device_async_create_group(tokens)
        nvgpu.device_async_wait(group, num_groups=0)
        nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)

    def load_q(self, fr: _Frame) -> None:
        self.copy_q(fr)
        gpu.barrier()

    # -- the two products -----------------------------------------------------------------------

    def warpgroup(self, fr: _Frame) -> ir.Value:
        return a.div(fr.ln.tid, WARPGROUP)

    def scores_wgmma(self, fr: _Frame, k_address: ir.Value) -> Fragments:
        """S = Q·K_jᵀ for this warpgroup's 64 rows: D/16 wgmma k steps, then their wait."""
        cfg = self.cfg
        q_rows = arith.addi(
            fr.tiles["address"], i64(a.mul(self.warpgroup(fr), WGMMA_M * ROW_BYTES))
        )
        q_desc = descriptor(q_rows)
        k_desc = descriptor(k_address)
        nvvm.wgmma_fence_aligned()
        acc = llvm.mlir_undef(f32_struct(cfg.block_n // 2))
        for chunk in range(cfg.head_dim // CHUNK):
            for step in range(CHUNK // K_STEP):
                along = step * K_STEP * 2
                acc = wgmma(
                    cfg.dtype,
                    cfg.block_n,
                    acc,
                    _advance(q_desc, chunk * cfg.block_m * ROW_BYTES + along),
                    _advance(k_desc, chunk * cfg.block_n * ROW_BYTES + along),
                    accumulate=chunk + step > 0,
                )
        nvvm.wgmma_commit_group_sync_aligned()
        nvvm.wgmma_wait_group_sync_aligned(0)
        f32 = a.f32_type()
        scores = _pin([llvm.extractvalue(f32, acc, [i]) for i in range(cfg.block_n // 2)])
        return [scores[4 * j : 4 * j + 4] for j in range(cfg.block_n // 8)]

    def accumulate_wgmma(
        self, acc: Fragments, packed: list[list[ir.Value]], v_address: ir.Value
    ) -> Fragments:
        """O += P·V_j: per 16 keys one register-A wgmma of n = Dv against V's N-major tile."""
        cfg = self.cfg
        flat = _pin([x for tile in acc for x in tile])
        words = _pin([_word(x) for operand in packed for x in operand])
        v_desc = descriptor(v_address, cfg.block_n * ROW_BYTES)
        nvvm.wgmma_fence_aligned()
        for step in range(len(packed)):
            flat = _wgmma_register_a(
                cfg.dtype,
                cfg.dv,
                flat,
                words[4 * step : 4 * step + 4],
                _advance(v_desc, step * 16 * ROW_BYTES),
            )
        nvvm.wgmma_commit_group_sync_aligned()
        nvvm.wgmma_wait_group_sync_aligned(0)
        flat = _pin(flat)
        return [flat[4 * t : 4 * t + 4] for t in range(len(flat) // 4)]

    def initial_carry(self) -> list[ir.Value]:
        """The key loop's carried values at its start: O = 0, m = -inf, l = 0."""
        zero, minus_inf = a.f32(0.0), a.f32(NEG_INF)
        return [zero] * (4 * (self.cfg.dv // 8)) + [minus_inf, minus_inf, zero, zero]

    def key_tile(
        self, fr: _Frame, j: ir.Value, stage: ir.Value, acc: Fragments, state: RowState
    ) -> tuple[Fragments, RowState]:
        """One key tile, landed in ``stage``: S = Q·K_jᵀ, the mask where the tile needs it,
        the online softmax step, O = α·O + P·V_j (both products completed on return)."""
        cfg = self.cfg
        k_at = arith.addi(
            fr.tiles["address"], i64(a.add(self.q_bytes, a.mul(stage, self.kv_bytes)))
        )
        v_at = arith.addi(k_at, a.const(self.k_bytes, ir.IntegerType.get_signless(64)))
        k0 = a.mul(j, cfg.block_n)
        r = self._masked(fr, k0, [raw_scores(cfg, self.scores_wgmma(fr, k_at))])
        p, alpha, new_state = softmax_step(cfg, r[0], state)
        rescaled = rescale(acc, alpha)
        return self.accumulate_wgmma(rescaled, pack_probabilities(cfg.dtype, p), v_at), new_state

    # -- the loop -------------------------------------------------------------------------------

    def main_loop(
        self, fr: _Frame, q_regs: list[list[list[ir.Value]]] | None
    ) -> tuple[list[Fragments], list[RowState]]:
        cfg = self.cfg
        stages = cfg.stages
        n_acc = cfg.dv // 8
        first, end = self.key_tiles(fr)
        token = None
        for prior in range(stages - 1):
            token = self.issue_kv(fr, a.add(first, prior), a.idx(prior), end)
        assert token is not None or stages == 1
        init = self.initial_carry()
        carried = [] if token is None else [token]
        loop = a.for_op(first, end, [*init, *carried])
        with ir.InsertionPoint(loop.body):
            values = list(loop.inner_iter_args)
            acc, states = self._unpack(list(values[: len(init)]), n_acc)
            j = loop.induction_variable
            if token is not None:
                nvgpu.device_async_wait(values[-1], num_groups=stages - 2)
            self.visible_to_wgmma()
            ahead = a.add(j, stages - 1)
            ahead_stage = a.rem(a.sub(ahead, first), stages)
            next_token = self.issue_kv(fr, ahead, ahead_stage, end)
            if token is None:  # one stage: the tile just issued is the one to compute
                nvgpu.device_async_wait(next_token, num_groups=0)
                self.visible_to_wgmma()
            stage = a.rem(a.sub(j, first), stages)
            new_acc, state = self.key_tile(fr, j, stage, acc[0], states[0])
            if stages == 1:  # the next tile overwrites this one
                gpu.barrier()
            scf.yield_([*self._pack([new_acc], [state]), *([next_token] if token else [])])
        results = list(loop.results)
        if token is not None:
            nvgpu.device_async_wait(results[-1], num_groups=0)
        return self._unpack(results[: len(init)], n_acc)


def _pin(values: list[ir.Value]) -> list[ir.Value]:
    """``values`` passed through an empty volatile asm statement: reads of a wgmma's results
    stay after its wait, and writes of its register operands before its fence (LLVM keeps
    side-effecting statements in order, and a value from this one exists only after it)."""
    kinds = {"f32": "f", "i32": "r"}
    constraints = [kinds[str(v.type)] for v in values]
    count = len(values)
    result = llvm.InlineAsmOp(
        ir.Type.parse("!llvm.struct<(" + ", ".join(str(v.type) for v in values) + ")>"),
        values,
        "",
        ",".join([f"={c}" for c in constraints] + [str(i) for i in range(count)]),
        has_side_effects=True,
    ).result
    return [llvm.extractvalue(v.type, result, [i]) for i, v in enumerate(values)]


def _opaque(value: ir.Value) -> ir.Value:
    """``value`` (an index) passed through an empty volatile asm statement, as ``_pin`` does
    for several (an asm statement with one output returns it bare, not in a struct): what
    is computed from it is computed after that statement."""
    i32 = a.i32_type()
    word = arith.index_cast(i32, value)
    passed = llvm.InlineAsmOp(i32, [word], "", "=r,0", has_side_effects=True).result
    return arith.index_cast(a.index_type(), passed)


def _word(operand: ir.Value) -> ir.Value:
    """A packed pair as the i32 register the inline wgmma takes."""
    i32 = a.i32_type()
    if operand.type == i32:
        return operand
    return llvm.bitcast(i32, operand)


def _wgmma_register_a(
    dtype: str, n: int, acc: list[ir.Value], a_words: list[ir.Value], b_desc: ir.Value
) -> list[ir.Value]:
    """``acc += A·B`` with ``wgmma.mma_async.m64n{n}k16``, A from four registers and B an
    N-major descriptor (imm-trans-b 1). The NVVM dialect's op takes A only as a descriptor,
    so this one is inline PTX: the accumulators are tied in-out operands."""
    count = n // 2
    outputs = ", ".join(f"${i}" for i in range(count))
    words = ", ".join(f"${count + i}" for i in range(4))
    ptx = (
        "{\n.reg .pred p;\n"
        f"setp.ne.b32 p, ${count + 5}, 0;\n"
        f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{dtype}.{dtype} "
        f"{{{outputs}}}, {{{words}}}, ${count + 4}, p, 1, 1, 1;\n}}\n"
    )
    constraints = ",".join(["=f"] * count + ["r"] * 4 + ["l", "r"] + [str(i) for i in range(count)])
    result = llvm.InlineAsmOp(
        f32_struct(count),
        [*a_words, b_desc, a.i32(1), *acc],
        ptx,
        constraints,
        has_side_effects=True,
    ).result
    f32 = a.f32_type()
    return [llvm.extractvalue(f32, result, [i]) for i in range(count)]


def kernel_entry(km: KernelModule, kernel: _WgmmaKernel, name: str, threads: int) -> ir.Block:
    """Adds the kernel's function (the attention parameters, ``threads`` a block) and binds
    its arguments to ``kernel``; returns the body to emit into."""
    params = typed_params(kernel.cfg.dtype)
    fn, block = km.add_kernel(name, params)
    fn.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([threads, 1, 1])
    kernel.args = {p.name: v for p, v in zip(params, block.arguments, strict=True)}
    return block


def emit_wgmma_kernel(km: KernelModule, cfg: AttentionConfig, name: str) -> tuple[int, int]:
    """Adds the kernel; returns (threads per block, dynamic shared memory bytes)."""
    kernel = _WgmmaKernel(cfg, {})
    block = kernel_entry(km, kernel, name, kernel.threads)
    with ir.InsertionPoint(block):
        fr = kernel.frame()
        kernel.load_q(fr)
        acc, states = kernel.main_loop(fr, None)
        kernel.store(fr, acc, states)
        gpu.ReturnOp([])
    return kernel.threads, kernel.smem_bytes
