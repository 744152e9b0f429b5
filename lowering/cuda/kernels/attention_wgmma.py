"""The bf16/f16 flash-attention kernel for Hopper (sm_90a): warpgroup MMAs (wgmma) on
128-byte-swizzled shared tiles.

A block of ``block_m / 64`` warpgroups computes ``block_m`` queries of one (batch, head);
warpgroup w owns queries 64w..64w+63, its warp i rows 16i..16i+15 of those. Each warpgroup
walks the key tiles of ``block_n`` keys:

    S_j = Q·K_jᵀ   wgmma.m64n{block_n}k16, A (its 64 query rows) and B (the key rows) both
                   read from shared memory through matrix descriptors, K-major
    softmax        on S_j's registers: the accumulator of warp i is the mma.sync C layout of
                   its 16 rows, so the online softmax, the mask and the softcap are the
                   tensor-core kernel's own (``attention_softmax``)
    O += P·V       wgmma.m64n{Dv}k16 with A = P straight from the registers (the C layout of
                   two adjacent 8-key groups is the A layout of one k step) and B = V from
                   shared memory, N-major (V's rows are keys, contiguous along Dv)

**Overlap.** Within a warpgroup, iteration j issues S_j and then the P·V product of the
previous tile as two wgmma groups, waits for the first only, and runs tile j's softmax while
the second is still on the tensor cores; O is rescaled once that one is in. Across the two
warpgroups of a block the tensor cores stay busy while either is in its softmax.

**Shared layout.** A [rows, D] tile is stored as D/64 column chunks of [rows, 64]: each row
of a chunk is 128 bytes, and its 16-byte unit u sits at unit ``u xor (row mod 8)`` (the
128-byte swizzle, which wgmma undoes from the address bits; every chunk starts on a
1024-byte boundary). For the K-major operands (Q, K) a descriptor's stride is the 1024
bytes between 8-row groups and a k step of 16 moves its start 32 bytes; for the N-major V
the leading offset is the distance between chunks (block_n · 128 bytes), the stride again
1024 bytes, and a k step of 16 keys moves the start 16 rows (2048 bytes).

**Copies.** Global → shared by cp.async, 16 bytes per thread and copy, written at the
swizzled place; rows past the sequence's end are zero-filled. K and V each have two stages:
iteration j copies K_{j+1} and V_j (the stages K_{j-1} and V_{j-2} had, which every thread
finished reading before this iteration's barrier), so each tile has one iteration to land.
After a wait each thread fences its copies to the async proxy (``fence.proxy.async``)
before the barrier, as wgmma reads shared memory through that proxy.

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

WARPGROUP = 128
WGMMA_M = 64  # query rows per warpgroup
CHUNK = 64  # elements of a 128-byte swizzled row
ROW_BYTES = 128
SWIZZLE_BYTES = 1024  # 8 rows of 128 bytes: the swizzle's period
COPY_BYTES = 16
STAGES = 2  # K and V tiles in shared memory at once, each


def wgmma_shape(cfg: AttentionConfig) -> bool:
    """Whether the Hopper kernel takes ``cfg``: bf16/f16, D and Dv multiples of 64 up to 256."""
    return cfg.dtype in ("bf16", "f16") and all(
        dim % CHUNK == 0 and dim <= 256 for dim in (cfg.head_dim, cfg.dv)
    )


def shared_bytes(cfg: AttentionConfig) -> int:
    """The Q tile, two K and two V tiles, and the alignment slack."""
    q = cfg.block_m * cfg.head_dim * 2
    kv = cfg.block_n * (cfg.head_dim + cfg.dv) * 2
    return q + STAGES * kv + SWIZZLE_BYTES


def resolve_wgmma(cfg: AttentionConfig, arch: str) -> AttentionConfig:
    """``cfg`` with its tile fields chosen: two warpgroups (128 queries), 64 keys per tile
    for D or Dv above 128 (the O accumulator then takes 128 registers a thread) and 128
    below; two K and two V stages (the main loop's schedule needs exactly two)."""
    cfg.validate()
    block_m = cfg.block_m or 2 * WGMMA_M
    block_n = cfg.block_n or (64 if max(cfg.head_dim, cfg.dv) > 128 else 128)
    resolved = replace(
        cfg,
        block_m=block_m,
        block_n=block_n,
        warps=block_m // 16,
        stages=STAGES,
        q_in_registers=False,
    )
    if cfg.stages not in (0, STAGES):
        raise ValueError(f"the wgmma attention kernel keeps {STAGES} K/V stages, not {cfg.stages}")
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


def _i64(value: ir.Value) -> ir.Value:
    return arith.index_cast(ir.IntegerType.get_signless(64), value)


def _descriptor(address: ir.Value, leading: int) -> ir.Value:
    """A 128-byte-swizzled wgmma matrix descriptor for the tile at shared ``address`` (an
    i64 byte address): start >> 4 in bits 0-13, the leading offset >> 4 in 16-29 (the
    distance between 64-element chunks of an N-major operand; unused, 1, for K-major), the
    1024-byte stride between 8-row groups >> 4 in 32-45, swizzle mode 1 in 62-63."""
    i64 = ir.IntegerType.get_signless(64)
    fields = ((leading >> 4) << 16) | ((SWIZZLE_BYTES >> 4) << 32) | (1 << 62)
    start = arith.andi(arith.shrui(address, a.const(4, i64)), a.const(0x3FFF, i64))
    return arith.ori(start, a.const(fields, i64))


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
        i64 = ir.IntegerType.get_signless(64)
        base = _i64(memref.extract_aligned_pointer_as_index(smem))
        aligned = arith.andi(
            arith.addi(base, a.const(SWIZZLE_BYTES - 1, i64)), a.const(-SWIZZLE_BYTES, i64)
        )
        shift = arith.index_cast(a.index_type(), arith.subi(aligned, base))
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
    ) -> list[ir.Value]:
        """cp.async of rows first_row.. first_row + rows - 1 of ``tensor`` into the swizzled
        tile at element offset ``at`` of the flat view; rows below 0 or at or past ``limit``
        are zero-filled (their source clamped to a real row, of which no byte is read)."""
        units = dim * 2 // COPY_BYTES  # 16-byte units per row
        step = self.threads // units  # rows per turn
        assert rows % step == 0, (rows, dim)
        tid = fr.ln.tid
        unit, row = a.rem(tid, units), a.div(tid, units)
        chunk, within = a.div(unit, 8), a.rem(unit, 8)
        chunk_at = a.add(at, a.mul(chunk, rows * CHUNK))
        column = a.mul(unit, 8)
        stride = fr.strides[tensor]
        last = a.smax(a.sub(limit, 1), 0)
        tokens = []
        for turn in range(rows // step):
            tile_row = a.add(row, turn * step)
            # With a step that is a multiple of 8 the swizzle is the same every turn.
            swizzled = a.mul(arith.xori(within, a.rem(tile_row, 8)), 8)
            source_row = a.add(first_row, tile_row)
            # The tile before the first (source rows below 0) is zero-filled like those past
            # the end; either way the address stays on a real row.
            valid = a.both(a.cmp("slt", source_row, limit), a.cmp("sge", source_row, 0))
            clamped = a.smax(a.smin(source_row, last), 0)
            index = a.add(a.add(fr.bases[tensor], a.mul(clamped, stride)), column)
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

    def copy_keys(self, fr: _Frame, tensor: str, tile: ir.Value, end: ir.Value) -> list[ir.Value]:
        """The copies of key tile ``tile`` of ``tensor`` ("k" or "v") into its stage (the
        tile's parity); a tile outside [0, end) is zero-filled and reads nothing."""
        cfg = self.cfg
        dim = cfg.head_dim if tensor == "k" else cfg.dv
        inside = a.both(a.cmp("slt", tile, end), a.cmp("sge", tile, 0))
        limit = a.select(inside, fr.seq_k, 0)
        return self.copy_tile(
            fr,
            tensor,
            self.stage_at(tensor, tile),
            cfg.block_n,
            dim,
            a.mul(tile, cfg.block_n),
            limit,
        )

    def stage_at(self, tensor: str, tile: ir.Value) -> ir.Value:
        """The element offset (in the flat view) of ``tensor``'s stage for key tile ``tile``:
        Q, then the two K stages, then the two V stages."""
        size = self.k_bytes if tensor == "k" else self.v_bytes
        first = self.q_bytes if tensor == "k" else self.q_bytes + 2 * self.k_bytes
        stage = a.rem(a.add(tile, 2), 2)  # tile >= -1
        return a.add(first // 2, a.mul(stage, size // 2))

    def address(self, fr: _Frame, at: ir.Value) -> ir.Value:
        """The shared byte address of element offset ``at`` of the flat view."""
        return arith.addi(fr.tiles["address"], _i64(a.mul(at, 2)))

    @staticmethod
    def visible_to_wgmma() -> None:
        """Makes this thread's landed copies visible to the async proxy, then to the block."""
        nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
        gpu.barrier()

    def issue_q(self, fr: _Frame) -> ir.Value:
        """Issues the Q tile's copies as one group (the main loop's first wait covers it)."""
        cfg = self.cfg
        tokens = self.copy_tile(fr, "q", a.idx(0), cfg.block_m, cfg.head_dim, fr.q0, fr.seq_q)
        return nvgpu.device_async_create_group(tokens)

    # -- the two products -----------------------------------------------------------------------

    def issue_scores(self, fr: _Frame, k_address: ir.Value) -> ir.Value:
        """Issues S = Q·K_jᵀ for this warpgroup's 64 rows (D/16 k steps) as one group;
        returns the accumulator struct, to be read after the group's wait."""
        cfg = self.cfg
        acc_type = _struct(cfg.block_n // 2)
        warpgroup = a.div(fr.ln.tid, WARPGROUP)
        q_rows = arith.addi(fr.tiles["address"], _i64(a.mul(warpgroup, WGMMA_M * ROW_BYTES)))
        q_desc = _descriptor(q_rows, 16)
        k_desc = _descriptor(k_address, 16)
        acc = llvm.mlir_undef(acc_type)
        for chunk in range(cfg.head_dim // CHUNK):
            for step in range(CHUNK // 16):
                along = step * 32
                acc = nvvm.WgmmaMmaAsyncOp(
                    acc_type,
                    acc,
                    _advance(q_desc, chunk * cfg.block_m * ROW_BYTES + along),
                    _advance(k_desc, chunk * cfg.block_n * ROW_BYTES + along),
                    _attr(f"#nvvm.shape<m = 64, n = {cfg.block_n}, k = 16>"),
                    _attr(f"#nvvm.wgmma_type<{cfg.dtype}>"),
                    _attr(f"#nvvm.wgmma_type<{cfg.dtype}>"),
                    _attr("#nvvm.wgmma_type<f32>"),
                    _attr(f"#nvvm.wgmma_scale_out<{'zero' if chunk == step == 0 else 'one'}>"),
                    _attr("#nvvm.wgmma_scale_in<one>"),
                    _attr("#nvvm.wgmma_scale_in<one>"),
                    _attr("#nvvm.mma_layout<row>"),
                    _attr("#nvvm.mma_layout<col>"),
                ).result
        nvvm.wgmma_commit_group_sync_aligned()
        return acc

    def issue_values(
        self, acc: list[ir.Value], words: list[ir.Value], v_address: ir.Value
    ) -> list[ir.Value]:
        """Issues O += P·V (per 16 keys one register-A wgmma of n = Dv against V's N-major
        tile) as one group; the results are read after the group's wait."""
        cfg = self.cfg
        v_desc = _descriptor(v_address, cfg.block_n * ROW_BYTES)
        for step in range(cfg.block_n // 16):
            acc = _wgmma_register_a(
                cfg.dtype,
                cfg.dv,
                acc,
                words[4 * step : 4 * step + 4],
                _advance(v_desc, step * 16 * ROW_BYTES),
            )
        nvvm.wgmma_commit_group_sync_aligned()
        return acc

    # -- the loop -------------------------------------------------------------------------------

    def key_loop(self, fr: _Frame, q_group: ir.Value) -> tuple[list[Fragments], list[RowState]]:
        """Iteration j: wait for K_j and V_{j-1}; issue the copies of K_{j+1} and V_j; issue
        S_j = Q·K_jᵀ, then O += P_{j-1}·V_{j-1}; once S_j is in, its softmax runs while the
        P·V product is still on the tensor cores; then O is rescaled by α_j. The P·V of the
        last tile follows the loop. Before the first tile, P is zeros and the V stage it
        reads is zero-filled, so the loop needs no first-iteration special case."""
        del q_group  # the first wait below covers the Q copies too
        cfg = self.cfg
        n_acc = cfg.dv // 8
        first, end = self.key_tiles(fr)
        prologue = self.copy_keys(fr, "k", first, end)
        prologue += self.copy_keys(fr, "v", a.sub(first, 1), end)
        group = nvgpu.device_async_create_group(prologue)
        zero, minus_inf = a.f32(0.0), a.f32(NEG_INF)
        n_words = cfg.block_n // 4
        init = [zero] * (4 * n_acc) + [minus_inf, minus_inf, zero, zero]
        loop = a.for_op(first, end, [*init, *[a.i32(0)] * n_words, group])
        with ir.InsertionPoint(loop.body):
            values = list(loop.inner_iter_args)
            acc, states = self._unpack(values[: len(init)], n_acc)
            words = values[len(init) : len(init) + n_words]
            j = loop.induction_variable
            nvgpu.device_async_wait(values[-1], num_groups=0)
            self.visible_to_wgmma()
            following = self.copy_keys(fr, "k", a.add(j, 1), end)
            following += self.copy_keys(fr, "v", j, end)
            next_group = nvgpu.device_async_create_group(following)

            flat = _pin([x for tile in acc[0] for x in tile])
            words = _pin(words)
            nvvm.wgmma_fence_aligned()
            scores_acc = self.issue_scores(fr, self.address(fr, self.stage_at("k", j)))
            flat = self.issue_values(flat, words, self.address(fr, self.stage_at("v", a.sub(j, 1))))
            nvvm.wgmma_wait_group_sync_aligned(1)  # S_j is in; the P·V group may still run
            f32 = a.f32_type()
            scores = _pin(
                [llvm.extractvalue(f32, scores_acc, [i]) for i in range(cfg.block_n // 2)]
            )
            tiles = [scores[4 * t : 4 * t + 4] for t in range(cfg.block_n // 8)]
            r = self._masked(fr, a.mul(j, cfg.block_n), [raw_scores(cfg, tiles)])
            p, alpha, state = softmax_step(cfg, r[0], states[0])
            new_words = [_word(x) for step in pack_probabilities(cfg.dtype, p) for x in step]
            nvvm.wgmma_wait_group_sync_aligned(0)
            flat = _pin(flat)
            rescaled = rescale([flat[4 * t : 4 * t + 4] for t in range(n_acc)], alpha)
            scf.yield_([*self._pack([rescaled], [state]), *new_words, next_group])
        results = list(loop.results)
        acc, states = self._unpack(results[: len(init)], n_acc)
        words = results[len(init) : len(init) + n_words]
        nvgpu.device_async_wait(results[-1], num_groups=0)
        self.visible_to_wgmma()
        flat = _pin([x for tile in acc[0] for x in tile])
        words = _pin(words)
        nvvm.wgmma_fence_aligned()
        last_v = self.address(fr, self.stage_at("v", a.sub(end, 1)))
        flat = self.issue_values(flat, words, last_v)
        nvvm.wgmma_wait_group_sync_aligned(0)
        flat = _pin(flat)
        return [[flat[4 * t : 4 * t + 4] for t in range(n_acc)]], states


def _attr(text: str) -> ir.Attribute:
    return ir.Attribute.parse(text)


def _struct(count: int) -> ir.Type:
    return ir.Type.parse("!llvm.struct<(" + ", ".join(["f32"] * count) + ")>")


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
        _struct(count),
        [*a_words, b_desc, a.i32(1), *acc],
        ptx,
        constraints,
        has_side_effects=True,
    ).result
    f32 = a.f32_type()
    return [llvm.extractvalue(f32, result, [i]) for i in range(count)]


def emit_wgmma_kernel(km: KernelModule, cfg: AttentionConfig, name: str) -> tuple[int, int]:
    """Adds the kernel; returns (threads per block, dynamic shared memory bytes)."""
    kernel = _WgmmaKernel(cfg, {})
    params = typed_params(cfg.dtype)
    fn, block = km.add_kernel(name, params)
    fn.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([kernel.threads, 1, 1])
    kernel.args = {p.name: v for p, v in zip(params, block.arguments, strict=True)}
    with ir.InsertionPoint(block):
        fr = kernel.frame()
        acc, states = kernel.key_loop(fr, kernel.issue_q(fr))
        kernel.store(fr, acc, states)
        gpu.ReturnOp([])
    return kernel.threads, kernel.smem_bytes
